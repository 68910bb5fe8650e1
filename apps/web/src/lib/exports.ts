/**
 * Exporting a conversation through the REST API (`GET .../conversations/{cid}/export`): the
 * active path as Markdown or JSON, or every version of every message as JSON. The request
 * carries the session's token in its `Authorization` header, never in the URL, so the file is
 * fetched here and handed to the page to save (see `saveFile`).
 */

import { SESSIONS_PATH } from "./endpoints";
import { describeError } from "./notices";

export type ExportFormat = "markdown" | "json" | "json-tree";

export const EXPORT_LABELS: Readonly<Record<ExportFormat, string>> = {
  markdown: "Export as Markdown",
  json: "Export as JSON",
  "json-tree": "Export as JSON, every version",
};

export interface ExportedFile {
  filename: string;
  blob: Blob;
}

export interface ExportRequest {
  sessionId: string;
  token: string;
  conversationId: string;
  title: string;
  format: ExportFormat;
}

export interface ExportApi {
  fetch(request: ExportRequest): Promise<ExportedFile>;
}

/** A refusal of the REST API, with its `error.code` and a sentence for the user. */
export class RestError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The export's path and query (the token goes in a header). */
export function exportPath(request: Pick<ExportRequest, "sessionId" | "conversationId" | "format">): string {
  const format = request.format === "markdown" ? "markdown" : "json";
  const tree = request.format === "json-tree" ? "true" : "false";
  const session = encodeURIComponent(request.sessionId);
  const conversation = encodeURIComponent(request.conversationId);
  return `${SESSIONS_PATH}/${session}/conversations/${conversation}/export?format=${format}&tree=${tree}`;
}

/** A file name from the conversation's title: letters, digits and dashes, never empty. */
export function exportFilename(title: string, format: ExportFormat): string {
  const stem =
    title
      .normalize("NFKD")
      .replace(/[\u0300-\u036f]/g, "")
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, "-")
      .replace(/^-+|-+$/g, "")
      .slice(0, 60)
      .replace(/-+$/, "") || "conversation";
  const suffix = format === "markdown" ? "md" : format === "json" ? "json" : "tree.json";
  return `${stem}.${suffix}`;
}

async function refusal(response: Response): Promise<RestError> {
  let code = `http_${response.status}`;
  let message: string | null = null;
  try {
    const body = (await response.json()) as { error?: { code?: unknown; message?: unknown } };
    if (typeof body.error?.code === "string") code = body.error.code;
    if (typeof body.error?.message === "string") message = body.error.message;
  } catch {
    // not JSON: the status says enough
  }
  return new RestError(response.status, code, describeError(code, message));
}

export function httpExportApi(fetchImpl: typeof fetch = (...args) => fetch(...args)): ExportApi {
  return {
    async fetch(request) {
      const response = await fetchImpl(exportPath(request), {
        headers: { Authorization: `Bearer ${request.token}` },
      });
      if (!response.ok) throw await refusal(response);
      return { filename: exportFilename(request.title, request.format), blob: await response.blob() };
    },
  };
}

/** Hand a file to the browser to save (an `<a download>` click on an object URL). */
export function saveFile(file: ExportedFile): void {
  const url = URL.createObjectURL(file.blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = file.filename;
  link.rel = "noopener";
  document.body.appendChild(link);
  link.click();
  link.remove();
  // Some browsers read the URL after the click returns: free it a while later.
  setTimeout(() => URL.revokeObjectURL(url), 40_000);
}

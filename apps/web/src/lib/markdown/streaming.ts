/**
 * Markdown that is still arriving. A reply cut mid-code-block has an odd number of fence
 * lines; closing the last fence makes the partial text render as the code block it will
 * become (instead of the rest of the reply flickering between code and prose).
 */

const FENCE = /^ {0,3}(`{3,}|~{3,})/;

export function closeOpenFence(text: string): string {
  let open: string | null = null;
  for (const line of text.split("\n")) {
    const match = FENCE.exec(line);
    if (!match) continue;
    const marker = match[1]!;
    if (open === null) {
      open = marker;
    } else if (marker[0] === open[0] && marker.length >= open.length && line.trim() === marker) {
      open = null;
    }
  }
  if (open === null) return text;
  return `${text}${text.endsWith("\n") ? "" : "\n"}${open}`;
}

/**
 * Where the server is. The production build is served by `chatcore serve` on the same origin
 * as the API, so everything is relative to the page. NEXT_PUBLIC_CHATCORE_URL (development
 * only) points the WebSocket at an API on another port; REST calls go through the dev
 * server's rewrite (next.config.ts) so they stay same-origin.
 */

export const SESSIONS_PATH = "/api/sessions";

export function webSocketUrl(): string {
  const configured = process.env.NEXT_PUBLIC_CHATCORE_URL;
  if (configured) {
    const base = configured.replace(/\/+$/, "").replace(/^http(s?):/, "ws$1:");
    return `${base}/ws`;
  }
  const { protocol, host } = window.location;
  return `${protocol === "https:" ? "wss:" : "ws:"}//${host}/ws`;
}

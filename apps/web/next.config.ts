import type { NextConfig } from "next";
import { PHASE_DEVELOPMENT_SERVER } from "next/constants";

/**
 * The production build is a static export (`out/`) that `chatcore serve` serves at `/`, with
 * the API and the WebSocket on the same origin, so the app only ever uses relative URLs.
 *
 * In development (`npm run dev`) the REST calls are proxied to a running API
 * (CHATCORE_API_URL, default http://127.0.0.1:8000); the WebSocket connects to
 * NEXT_PUBLIC_CHATCORE_URL when it is set (see src/lib/endpoints.ts).
 */
export default function config(phase: string): NextConfig {
  const base: NextConfig = {
    output: "export",
    reactStrictMode: true,
    trailingSlash: false,
    images: { unoptimized: true },
    poweredByHeader: false,
  };
  if (phase !== PHASE_DEVELOPMENT_SERVER) return base;
  const api = process.env.CHATCORE_API_URL ?? process.env.NEXT_PUBLIC_CHATCORE_URL ?? "http://127.0.0.1:8000";
  return {
    ...base,
    output: undefined,
    // Dev resources are refused to origins other than localhost unless listed here.
    allowedDevOrigins: ["127.0.0.1"],
    async rewrites() {
      return [{ source: "/api/:path*", destination: `${api}/api/:path*` }];
    },
  };
}

import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { ChatServer, WEB_DIR } from "./support/servers";

/**
 * Builds the static client if it is missing (`npm run e2e` always builds first), then starts
 * the shared `chatcore serve` (in-memory backend, offline demo model) the tests that need no
 * restart use. Its URL reaches the tests through CHATCORE_E2E_URL.
 */
export default async function globalSetup(): Promise<() => Promise<void>> {
  if (!existsSync(path.join(WEB_DIR, "out", "index.html"))) {
    execFileSync("npx", ["next", "build"], { cwd: WEB_DIR, stdio: "inherit", env: { ...process.env, NEXT_TELEMETRY_DISABLED: "1" } });
  }
  const server = await ChatServer.start({ name: "shared" });
  process.env.CHATCORE_E2E_URL = server.url;
  return async () => {
    await server.stop();
  };
}

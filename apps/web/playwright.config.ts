import { defineConfig } from "@playwright/test";

/**
 * End-to-end tests: Debian's Chromium (never a downloaded browser) against a real
 * `chatcore serve` started by e2e/global-setup.ts (and, for restart tests, by a fixture).
 */
const chromium = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

export const LAUNCH = {
  executablePath: chromium,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
};

export default defineConfig({
  testDir: "e2e",
  outputDir: "test-results/artifacts",
  globalSetup: "./e2e/global-setup.ts",
  timeout: 120_000,
  expect: { timeout: 20_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [["list"]],
  use: {
    browserName: "chromium",
    viewport: { width: 1100, height: 760 },
    launchOptions: LAUNCH,
    trace: "retain-on-failure",
    screenshot: "only-on-failure",
  },
});

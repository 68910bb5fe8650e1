import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { GENERATED, renderProtocolTypes, SCRIPT } from "../../scripts/protocol-types.mjs";

const scratch = mkdtempSync(join(tmpdir(), "protocol-types-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function check(out: string) {
  return spawnSync(process.execPath, [SCRIPT, "--check", "--out", out], { encoding: "utf-8" });
}

describe("the generated protocol types", () => {
  it("are what the committed JSON Schemas generate (else: npm run protocol:generate)", async () => {
    expect(readFileSync(GENERATED, "utf-8")).toBe(await renderProtocolTypes());
  });

  it("say they are generated, and from what", async () => {
    const text = await renderProtocolTypes();
    expect(text.startsWith("/*\n * GENERATED FILE: do not edit.")).toBe(true);
    expect(text).toContain("npm run protocol:generate");
    expect(text).toContain("docs/protocol/server.json");
  });

  it("the check passes on a current file and fails, naming it, on a stale or missing one", async () => {
    const out = join(scratch, "protocol.generated.ts");
    const current = await renderProtocolTypes();
    writeFileSync(out, current);
    const ok = check(out);
    expect(ok.stderr).toBe("");
    expect(ok.status).toBe(0);

    writeFileSync(out, current.replace("export interface Limits {", "export interface Limits {\n  extra: string;"));
    const stale = check(out);
    expect(stale.status).toBe(1);
    expect(stale.stderr).toContain("protocol.generated.ts is stale");

    const missing = check(join(scratch, "nothing.ts"));
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain("nothing.ts is missing");
  });
});

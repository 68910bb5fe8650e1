import { render } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { Markdown } from "@/components/Markdown";
import { parseHighlighted } from "@/lib/markdown/highlight";
import { closeOpenFence } from "@/lib/markdown/streaming";

describe("safe markdown", () => {
  it("shows a script tag as text and never creates or runs it", () => {
    const alarm = vi.fn();
    (window as unknown as { alarm: () => void }).alarm = alarm;
    const { container } = render(<Markdown text={"Look: <script>window.alarm()</script> done"} />);
    expect(container.querySelector("script")).toBeNull();
    expect(container.textContent).toContain("<script>window.alarm()</script>");
    expect(alarm).not.toHaveBeenCalled();
  });

  it("shows an img with onerror as text, creating no element and no handler", () => {
    const { container } = render(<Markdown text={'<img src="x" onerror="window.alarm()">\n\nand inline <b onclick="x()">bold</b>'} />);
    expect(container.querySelector("img")).toBeNull();
    expect(container.querySelector("b")).toBeNull();
    expect(container.querySelector("[onerror],[onclick]")).toBeNull();
    expect(container.textContent).toContain('<img src="x" onerror="window.alarm()">');
  });

  it("neutralises javascript: links and renders markdown images as links", () => {
    const { container } = render(<Markdown text={"[click](javascript:alert(1)) ![pic](https://example.com/p.png)"} />);
    for (const a of container.querySelectorAll("a")) expect(a.getAttribute("href") ?? "").not.toMatch(/^javascript:/i);
    expect(container.querySelector("img")).toBeNull();
    expect(container.textContent).toContain("Image: pic");
  });

  it("renders GFM tables and highlighted code without injecting HTML", () => {
    const text = "| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\ndef f(x):\n    return '<b>' + x\n```";
    const { container } = render(<Markdown text={text} />);
    expect(container.querySelector("table")).not.toBeNull();
    const code = container.querySelector("pre code")!;
    expect(code.querySelector(".hljs-keyword")?.textContent).toBe("def");
    expect(code.querySelector("b")).toBeNull();
    expect(code.textContent).toContain("'<b>' + x");
  });

  it("renders an unclosed fence mid-stream as a code block", () => {
    const { container } = render(<Markdown text={"Here:\n```js\nconst a = 1;"} streaming />);
    expect(container.querySelector("pre code")?.textContent).toContain("const a = 1;");
  });
});

describe("streaming helpers", () => {
  it("closes an open fence and leaves closed ones alone", () => {
    expect(closeOpenFence("a\n```py\nx = 1")).toBe("a\n```py\nx = 1\n```");
    expect(closeOpenFence("```\nx\n```\n")).toBe("```\nx\n```\n");
    expect(closeOpenFence("~~~~\ncode ``` inside\n")).toBe("~~~~\ncode ``` inside\n~~~~");
  });

  it("reads highlighter output back as spans and text only", () => {
    expect(parseHighlighted('<span class="hljs-string">&#x27;&lt;b&gt;&#x27;</span> &amp; <i>x</i>')).toEqual([
      { className: "hljs-string", children: ["'<b>'"] },
      " & <i>x</i>",
    ]);
  });
});

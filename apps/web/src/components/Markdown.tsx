"use client";

import { memo, type ReactNode } from "react";
import ReactMarkdown, { type Components } from "react-markdown";
import remarkGfm from "remark-gfm";
import { highlightTokens, type HighlightNode } from "@/lib/markdown/highlight";
import { remarkRawHtmlAsText } from "@/lib/markdown/rawHtmlAsText";
import { closeOpenFence } from "@/lib/markdown/streaming";
import { CopyButton } from "./CopyButton";

function renderTokens(nodes: HighlightNode[], prefix = ""): ReactNode[] {
  return nodes.map((node, i) =>
    typeof node === "string" ? (
      node
    ) : (
      <span key={`${prefix}${i}`} className={node.className}>
        {renderTokens(node.children, `${prefix}${i}.`)}
      </span>
    ),
  );
}

/** The text of a syntax-tree node (the code inside a `pre`), as it was written. */
interface TreeNode {
  type: string;
  value?: string;
  children?: TreeNode[];
}

function textOf(node: TreeNode | undefined): string {
  if (!node) return "";
  if (node.type === "text") return node.value ?? "";
  return (node.children ?? []).map(textOf).join("");
}

function CodeBlock({ className, children }: { className?: string; children?: ReactNode }) {
  const language = /language-([\w+-]+)/.exec(className ?? "")?.[1];
  const code = typeof children === "string" ? children : String(children ?? "");
  const tokens = highlightTokens(code.replace(/\n$/, ""), language);
  return (
    <code className={`hljs${language ? ` language-${language}` : ""}`}>
      {tokens ? renderTokens(tokens) : code}
    </code>
  );
}

const components: Components = {
  // Inline code has no language class and no newline; fenced blocks go through CodeBlock.
  code({ className, children }) {
    const isBlock = /language-/.test(className ?? "") || (typeof children === "string" && children.includes("\n"));
    return isBlock ? <CodeBlock className={className}>{children}</CodeBlock> : <code>{children}</code>;
  },
  pre({ node, children }) {
    return (
      <div className="code-frame">
        <pre className="code-block">{children}</pre>
        <CopyButton text={textOf(node).replace(/\n$/, "")} label="Copy code" className="code-copy" />
      </div>
    );
  },
  a({ href, children }) {
    return (
      <a href={href} target="_blank" rel="noopener noreferrer nofollow">
        {children}
      </a>
    );
  },
  // A model's image would be fetched from wherever it points (and could leak the page's
  // context in its URL): show it as a link the reader may choose to open.
  img({ src, alt }) {
    const url = typeof src === "string" ? src : "";
    return url ? (
      <a href={url} target="_blank" rel="noopener noreferrer nofollow">
        {alt ? `Image: ${alt}` : "Image"}
      </a>
    ) : (
      <span>{alt}</span>
    );
  },
};

const remarkPlugins = [remarkGfm, remarkRawHtmlAsText];

/** Markdown from the model, rendered safely: no raw HTML, no scripts, no auto-loaded images. */
export const Markdown = memo(function Markdown({ text, streaming = false }: { text: string; streaming?: boolean }) {
  return (
    <div className="markdown">
      <ReactMarkdown remarkPlugins={remarkPlugins} components={components} skipHtml={false}>
        {streaming ? closeOpenFence(text) : text}
      </ReactMarkdown>
    </div>
  );
});

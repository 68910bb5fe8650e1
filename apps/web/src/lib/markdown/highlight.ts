/**
 * Code highlighting with highlight.js core and a handful of languages (the bundle stays
 * small). Highlighting is skipped above MAX_HIGHLIGHT_CHARS or for unknown languages.
 *
 * highlight.js returns HTML; instead of injecting it, `highlightTokens` reads it back into a
 * tree of spans and text: only `<span class="hljs-...">` is understood, anything else stays
 * text. No HTML string from a model's reply ever reaches the DOM.
 */

import hljs from "highlight.js/lib/core";
import bash from "highlight.js/lib/languages/bash";
import css from "highlight.js/lib/languages/css";
import diff from "highlight.js/lib/languages/diff";
import javascript from "highlight.js/lib/languages/javascript";
import json from "highlight.js/lib/languages/json";
import python from "highlight.js/lib/languages/python";
import sql from "highlight.js/lib/languages/sql";
import typescript from "highlight.js/lib/languages/typescript";
import xml from "highlight.js/lib/languages/xml";
import yaml from "highlight.js/lib/languages/yaml";

hljs.registerLanguage("bash", bash);
hljs.registerLanguage("css", css);
hljs.registerLanguage("diff", diff);
hljs.registerLanguage("javascript", javascript);
hljs.registerLanguage("json", json);
hljs.registerLanguage("python", python);
hljs.registerLanguage("sql", sql);
hljs.registerLanguage("typescript", typescript);
hljs.registerLanguage("xml", xml);
hljs.registerLanguage("yaml", yaml);

export const MAX_HIGHLIGHT_CHARS = 20_000;

export type HighlightNode = string | { className: string; children: HighlightNode[] };

const ENTITIES: Record<string, string> = {
  "&amp;": "&",
  "&lt;": "<",
  "&gt;": ">",
  "&quot;": '"',
  "&#x27;": "'",
  "&#39;": "'",
};

function unescape(text: string): string {
  return text.replace(/&(?:amp|lt|gt|quot|#x27|#39);/g, (m) => ENTITIES[m] ?? m);
}

const TOKEN = /<span class="([A-Za-z0-9_\- ]+)">|<\/span>/g;

/** Parse highlight.js output (spans and escaped text only) into a tree. */
export function parseHighlighted(html: string): HighlightNode[] {
  const root: HighlightNode[] = [];
  const stack: { className: string; children: HighlightNode[] }[] = [];
  const top = () => (stack.length > 0 ? stack[stack.length - 1]!.children : root);
  let last = 0;
  for (const match of html.matchAll(TOKEN)) {
    const index = match.index ?? 0;
    if (index > last) top().push(unescape(html.slice(last, index)));
    if (match[1] !== undefined) {
      const span = { className: match[1], children: [] as HighlightNode[] };
      top().push(span);
      stack.push(span);
    } else if (stack.length > 0) {
      stack.pop();
    }
    last = index + match[0].length;
  }
  if (last < html.length) top().push(unescape(html.slice(last)));
  return root;
}

export function canHighlight(language: string | undefined, code: string): language is string {
  return language !== undefined && code.length <= MAX_HIGHLIGHT_CHARS && hljs.getLanguage(language) !== undefined;
}

/** Highlight `code` as `language`; null when it should be shown plain. */
export function highlightTokens(code: string, language: string | undefined): HighlightNode[] | null {
  if (!canHighlight(language, code)) return null;
  try {
    return parseHighlighted(hljs.highlight(code, { language, ignoreIllegals: true }).value);
  } catch {
    return null;
  }
}

/**
 * A remark plugin that turns raw HTML in the model's markdown into plain text, so that
 * `<script>` or `<img onerror=...>` written by a model are shown literally and never become
 * elements. (react-markdown without rehype-raw already refuses to create them; this keeps
 * them visible instead of silently dropping text.)
 */

interface MdNode {
  type: string;
  value?: string;
  children?: MdNode[];
}

function walk(node: MdNode): void {
  if (node.type === "html") node.type = "text";
  if (node.children) for (const child of node.children) walk(child);
}

export function remarkRawHtmlAsText() {
  return (tree: MdNode) => {
    walk(tree);
  };
}

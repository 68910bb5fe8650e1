"use client";

import { useEffect, useRef, useState } from "react";
import { copyText } from "@/lib/clipboard";

export interface CopyButtonProps {
  text: string;
  /** What is copied, for screen readers ("Copy message", "Copy code"). */
  label: string;
  className?: string;
}

type Outcome = "idle" | "copied" | "failed";

/** Copies `text`; says "Copied" (or that it could not) for two seconds, also to screen readers. */
export function CopyButton({ text, label, className }: CopyButtonProps) {
  const [outcome, setOutcome] = useState<Outcome>("idle");
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);

  useEffect(
    () => () => {
      if (timer.current !== null) clearTimeout(timer.current);
    },
    [],
  );

  const onClick = async () => {
    const copied = await copyText(text);
    setOutcome(copied ? "copied" : "failed");
    if (timer.current !== null) clearTimeout(timer.current);
    timer.current = setTimeout(() => setOutcome("idle"), 2000);
  };

  return (
    <>
      <button
        type="button"
        className={`btn btn-small btn-ghost btn-icon${className ? ` ${className}` : ""}`}
        aria-label={label}
        title={label}
        onClick={() => void onClick()}
        data-copied={outcome === "copied" ? "true" : undefined}
      >
        <span aria-hidden="true">{outcome === "copied" ? "Copied" : outcome === "failed" ? "Not copied" : "Copy"}</span>
      </button>
      <span className="sr-only" role="status">
        {outcome === "copied" ? "Copied" : outcome === "failed" ? "Could not copy" : ""}
      </span>
    </>
  );
}

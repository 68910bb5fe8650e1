"use client";

import { Suspense, useCallback } from "react";
import { useSearchParams } from "next/navigation";
import { ChatPage } from "@/components/ChatPage";
import { ErrorBoundary } from "@/components/ErrorBoundary";

/** Reads `?c=<conversation id>` (a static export has no dynamic routes) and keeps it current. */
function ChatRoute() {
  const params = useSearchParams();
  const onConversationShown = useCallback((id: string) => {
    const url = new URL(window.location.href);
    url.searchParams.set("c", id);
    window.history.replaceState(window.history.state, "", url);
  }, []);
  return <ChatPage conversationParam={params.get("c")} onConversationShown={onConversationShown} />;
}

export default function Home() {
  return (
    <ErrorBoundary>
      <Suspense fallback={<div className="loading">Loading…</div>}>
        <ChatRoute />
      </Suspense>
    </ErrorBoundary>
  );
}

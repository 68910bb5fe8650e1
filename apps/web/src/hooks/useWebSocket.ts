"use client";

import { useEffect, useRef } from "react";
import type { ChatClient } from "@/lib/chatClient";
import { webSocketUrl } from "@/lib/endpoints";
import { browserNetwork, connectSocket, type SocketOptions } from "@/lib/socket";

/** Test seams and tuning for the socket core (read through a ref: never a stale closure). */
export type SocketOverrides = Partial<Omit<SocketOptions, "prepareHello" | "onFrame" | "onStatus" | "onBadCursor">>;

/**
 * Keeps the chat's connection to `/ws` open while the component is mounted and `enabled`
 * (the saved state has been read, so the hello carries the right cursor).
 *
 * The socket core is a plain function with `dispose()`: the effect's cleanup disposes it, and
 * because the first connect is deferred by a timer, StrictMode's mount/unmount/mount in
 * development creates a single WebSocket, not two.
 */
export function useWebSocket(client: ChatClient, enabled: boolean, overrides?: SocketOverrides): void {
  const overridesRef = useRef(overrides);
  overridesRef.current = overrides;

  useEffect(() => {
    if (!enabled) return;
    const extra = overridesRef.current ?? {};
    const handle = connectSocket({
      url: extra.url ?? webSocketUrl,
      network: extra.network ?? browserNetwork(),
      ...extra,
      prepareHello: client.prepareHello,
      onFrame: client.receive,
      onStatus: client.onStatus,
      onBadCursor: client.onBadCursor,
    });
    client.attach(handle);
    return () => {
      client.detach(handle);
      handle.dispose();
    };
  }, [client, enabled]);
}

"use client";

import { useEffect, useState } from "react";
import { secondsUntil } from "@/lib/format";
import type { SocketStatus } from "@/lib/socket";

function useNow(active: boolean): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!active) return;
    setNow(Date.now());
    const id = setInterval(() => setNow(Date.now()), 500);
    return () => clearInterval(id);
  }, [active]);
  return now;
}

export interface ConnectionStatusProps {
  status: SocketStatus;
  /** The session was deleted (by another tab or device): said so instead of "expired". */
  sessionDeleted?: boolean;
  onRetry(): void;
  onNewSession(): void;
}

/** Where the connection stands, and what the user can do about it. */
export function ConnectionStatus({ status, sessionDeleted = false, onRetry, onNewSession }: ConnectionStatusProps) {
  const now = useNow(status.kind === "reconnecting");
  switch (status.kind) {
    case "open":
      return (
        <div className="conn conn-ok" role="status" data-testid="connection-status" data-state="connected">
          <span className="dot" aria-hidden="true" /> Connected
        </div>
      );
    case "reconnecting":
      return (
        <div className="conn conn-warn banner" role="status" data-testid="connection-status" data-state="reconnecting">
          <span>
            <strong>
              Reconnecting<span aria-hidden="true"> in {secondsUntil(status.retryAt, now)} s</span>…
            </strong>{" "}
            ({status.reason}). Messages you send are kept and go out once connected.
          </span>
          <button type="button" className="btn btn-small" onClick={onRetry}>
            Retry now
          </button>
        </div>
      );
    case "offline":
      return (
        <div className="conn conn-warn banner" role="status" data-testid="connection-status" data-state="offline">
          <span>You are offline. Messages you send wait on this device and go out when you are back online.</span>
          <button type="button" className="btn btn-small" onClick={onRetry}>
            Try now
          </button>
        </div>
      );
    case "expired":
      return (
        <div className="conn conn-error banner" role="alert" data-testid="connection-status" data-state="expired">
          <span>
            {sessionDeleted
              ? "Your chats were deleted (from another tab or device), so this session cannot continue. Unsent messages are kept for the new session."
              : "Your session has expired, so this conversation can no longer continue. Unsent messages are kept for the new session."}
          </span>
          <button type="button" className="btn btn-small btn-primary" onClick={onNewSession}>
            Start a new session
          </button>
        </div>
      );
    case "incompatible":
      return (
        <div className="conn conn-error banner" role="alert" data-testid="connection-status" data-state="incompatible">
          <span>This page is out of date for the server ({status.reason}). Reload to get the current version; unsent messages are kept.</span>
          <button type="button" className="btn btn-small btn-primary" onClick={() => window.location.reload()}>
            Reload
          </button>
        </div>
      );
    default:
      return (
        <div className="conn conn-pending" role="status" data-testid="connection-status" data-state="connecting">
          <span className="dot" aria-hidden="true" /> Connecting…
        </div>
      );
  }
}

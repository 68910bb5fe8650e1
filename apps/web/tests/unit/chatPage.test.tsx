import { fireEvent, screen, within } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ev, welcome } from "./support/fakeSocket";
import { connectFresh, MemoryStorage, renderPage, serve, tick } from "./support/page";

const submitted = (text: string, ms: number, clientId = `k${ms}`) =>
  ev(`${ms}-0`, { type: "message_submitted", conversation_id: "c1", message_id: `m${ms}`, client_message_id: clientId, text });
const started = (ms: number) =>
  ev(`${ms}-1`, { type: "reply_started", conversation_id: "c1", reply_id: `r${ms}`, in_reply_to: `m${ms}`, model: "Demo Model", attempt: 1 });
const delta = (ms: number, seq: number, text: string) =>
  ev(`${ms}-${seq}`, { type: "reply_delta", conversation_id: "c1", reply_id: `r${ms}`, text });
const completed = (ms: number, seq: number) =>
  ev(`${ms}-${seq}`, { type: "reply_completed", conversation_id: "c1", reply_id: `r${ms}`, in_reply_to: `m${ms}`, model: "Demo Model" });

function messageTexts(): string[] {
  return screen.queryAllByTestId("message").map((el) => el.querySelector(".msg-body")!.textContent ?? "");
}

function input(): HTMLTextAreaElement {
  return screen.getByRole("textbox", { name: "Message" });
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("ChatPage: connection", () => {
  it("opens a single connection under React StrictMode", async () => {
    const rig = renderPage({ strict: true });
    await tick(100);
    expect(rig.server.sockets).toHaveLength(1);
    expect(rig.api.calls).toBe(1);
  });

  it("shows connecting, connected, reconnecting with retry now, and expired with a new-session button", async () => {
    const rig = renderPage();
    expect(screen.getByTestId("connection-status").dataset.state).toBe("connecting");
    const ws = await connectFresh(rig);
    expect(screen.getByTestId("connection-status").dataset.state).toBe("connected");
    serve(() => ws.drop(1006));
    const status = screen.getByTestId("connection-status");
    expect(status.dataset.state).toBe("reconnecting");
    fireEvent.click(within(status).getByRole("button", { name: "Retry now" }));
    await tick();
    expect(rig.server.sockets).toHaveLength(2);
    serve(() => rig.server.last.drop(4001));
    expect(screen.getByTestId("connection-status").dataset.state).toBe("expired");
    expect(screen.getByTestId("composer-reason").textContent).toMatch(/session has expired/);
    fireEvent.click(screen.getByRole("button", { name: "Start a new session" }));
    await tick();
    expect(rig.api.calls).toBe(2);
    serve(() => rig.server.last.accept());
    expect(rig.server.last.frames()[0]).toMatchObject({ type: "hello", last_event_id: null });
  });

  it("shows offline with what the user can do", async () => {
    const rig = renderPage();
    rig.network.online = false;
    await tick();
    expect(screen.getByTestId("connection-status").dataset.state).toBe("offline");
    expect(screen.getByTestId("connection-status").textContent).toMatch(/go out when you are back online/);
  });
});

describe("ChatPage: streaming", () => {
  it("turns the typing indicator on and off from reply events only, never by a timer", async () => {
    const rig = renderPage();
    const ws = await connectFresh(rig);
    serve(() => ws.push(submitted("Hi", 2)));
    expect(screen.queryByTestId("typing-indicator")).toBeNull();
    serve(() => ws.push(started(2)));
    expect(screen.getByTestId("typing-indicator").textContent).toContain("Demo Model is writing");
    ws.autoPong = true;
    await tick(10 * 60_000); // ten minutes without reply events (pings answered)
    expect(rig.server.sockets).toHaveLength(1);
    expect(screen.getByTestId("typing-indicator")).toBeTruthy();
    serve(() => ws.push(completed(2, 2)));
    expect(screen.queryByTestId("typing-indicator")).toBeNull();
  });

  it("announces a completed reply in the polite live region, not every token", async () => {
    const rig = renderPage();
    const ws = await connectFresh(rig);
    serve(() => {
      ws.push(submitted("Hi", 2));
      ws.push(started(2));
      ws.push(delta(2, 2, "Hello "));
    });
    const live = screen.getByTestId("live-region");
    expect(live.getAttribute("aria-live")).toBe("polite");
    expect(live.textContent).toBe("");
    serve(() => {
      ws.push(delta(2, 3, "there"));
      ws.push(completed(2, 4));
    });
    expect(live.textContent).toBe("Assistant replied: Hello there");
  });

  it("stop sends cancel while a reply streams; the stopped reply keeps its text", async () => {
    const rig = renderPage();
    const ws = await connectFresh(rig);
    serve(() => {
      ws.push(submitted("Tell me a story", 2));
      ws.push(started(2));
      ws.push(delta(2, 2, "Once upon"));
    });
    expect(screen.getByTestId("composer-reason").textContent).toMatch(/answering/);
    fireEvent.click(screen.getByRole("button", { name: "Stop" }));
    expect(ws.framesOfType("cancel")).toMatchObject([{ conversation_id: "c1" }]);
    serve(() => {
      ws.push(ev("3-0", { type: "reply_cancel_requested", conversation_id: "c1", in_reply_to: "m2", reply_id: "r2" }));
      ws.push(ev("3-1", { type: "reply_cancelled", conversation_id: "c1", in_reply_to: "m2", reply_id: "r2", partial_text: "Once upon" }));
    });
    const last = screen.getAllByTestId("message").at(-1)!;
    expect(last.dataset.status).toBe("cancelled");
    expect(last.textContent).toContain("Stopped");
    expect(last.textContent).toContain("Once upon");
    expect(screen.queryByRole("button", { name: "Stop" })).toBeNull();
  });

  it("replaces an abandoned attempt by its retry", async () => {
    const rig = renderPage();
    const ws = await connectFresh(rig);
    serve(() => {
      ws.push(submitted("Hi", 2));
      ws.push(started(2));
      ws.push(delta(2, 2, "First try that dies"));
      ws.push(ev("2-3", { type: "reply_abandoned", conversation_id: "c1", reply_id: "r2", in_reply_to: "m2", reason: "worker lost" }));
    });
    expect(screen.queryByTestId("streaming-reply")).toBeNull();
    expect(screen.queryByTestId("typing-indicator")).toBeNull();
    expect(screen.getByTestId("retrying").textContent).toMatch(/retried/);
    serve(() => {
      ws.push(ev("3-0", { type: "reply_started", conversation_id: "c1", reply_id: "r3", in_reply_to: "m2", model: "Demo Model", attempt: 2 }));
      ws.push(ev("3-1", { type: "reply_delta", conversation_id: "c1", reply_id: "r3", text: "Second try" }));
    });
    expect(screen.getByTestId("typing-indicator")).toBeTruthy();
    serve(() => ws.push(ev("3-2", { type: "reply_completed", conversation_id: "c1", reply_id: "r3", in_reply_to: "m2", model: "Demo Model" })));
    expect(messageTexts()).toEqual(["Hi", "Second try"]);
    expect(screen.queryByTestId("retrying")).toBeNull();
  });

  it("shows a failed reply with its reason", async () => {
    const rig = renderPage();
    const ws = await connectFresh(rig);
    serve(() => {
      ws.push(submitted("Hi", 2));
      ws.push(ev("2-1", { type: "reply_failed", conversation_id: "c1", reply_id: null, in_reply_to: "m2", code: "llm_error", reason: "Every model is unavailable.", partial_text: "" }));
    });
    const last = screen.getAllByTestId("message").at(-1)!;
    expect(last.dataset.status).toBe("failed");
    expect(last.textContent).toContain("Every model is unavailable.");
  });
});

describe("ChatPage: reloads and the outbox", () => {
  it("a reload mid-reply paints the history at once and resumes from the stored cursor without duplicating text", async () => {
    const storage = new MemoryStorage();
    storage.setItem("chatcore.web.v1.welcomed", "1");
    const first = renderPage({ storage });
    const ws = await connectFresh(first);
    serve(() => {
      ws.push(submitted("Hi", 2));
      ws.push(started(2));
      ws.push(delta(2, 2, "Hel"));
    });
    first.view.unmount(); // the page goes away mid-reply (cleanup writes the state)

    const second = renderPage({ storage });
    await tick(0);
    // painted from storage before the server said anything
    expect(messageTexts()).toEqual(["Hi"]);
    expect(screen.getByTestId("streaming-reply").textContent).toContain("Hel");
    const ws2 = second.server.last;
    serve(() => ws2.accept());
    expect(ws2.frames()[0]).toEqual({ type: "hello", protocol: 1, token: "fresh-token", last_event_id: "2-2" });
    serve(() => {
      ws2.push(welcome({ resume: "events" }));
      ws2.push(delta(2, 2, "Hel")); // an overlapping replay is ignored
      ws2.push(delta(2, 3, "lo wor"));
      ws2.push(delta(2, 4, "ld"));
      ws2.push(completed(2, 5));
      ws2.push({ type: "caught_up", cursor: "2-5" });
    });
    expect(messageTexts()).toEqual(["Hi", "Hello world"]);
  });

  it("a message typed offline survives a reload and is sent when the server is back", async () => {
    const storage = new MemoryStorage();
    storage.setItem("chatcore.web.v1.welcomed", "1");
    const first = renderPage({ storage });
    const ws = await connectFresh(first);
    serve(() => ws.drop(1006));
    fireEvent.change(input(), { target: { value: "are you there?" } });
    fireEvent.keyDown(input(), { key: "Enter" });
    expect(screen.getByTestId("pending-message").textContent).toContain("are you there?");
    first.view.unmount();

    const second = renderPage({ storage });
    await tick(0);
    expect(screen.getByTestId("pending-message").textContent).toContain("are you there?");
    const ws2 = second.server.last;
    serve(() => {
      ws2.accept();
      ws2.push(welcome({ resume: "events" }));
      ws2.push({ type: "caught_up", cursor: "1-1" });
    });
    const sent = ws2.framesOfType("send");
    expect(sent.map((f) => f.text)).toEqual(["are you there?"]);
    serve(() =>
      ws2.push({ type: "ack", for_type: "send", cursor: "2-0", conversation_id: "c1", client_message_id: sent[0]!.client_message_id, message_id: "m2", duplicate: false }),
    );
    expect(screen.queryByTestId("pending-message")).toBeNull();
    expect(messageTexts()).toEqual(["are you there?"]);
    expect(storage.getItem("chatcore.web.v1.outbox")).toBeNull();
  });
});

describe("ChatPage: composing", () => {
  it("Enter sends, Shift+Enter does not", async () => {
    const rig = renderPage();
    const ws = await connectFresh(rig);
    fireEvent.change(input(), { target: { value: "line one" } });
    fireEvent.keyDown(input(), { key: "Enter", shiftKey: true });
    expect(ws.framesOfType("send")).toHaveLength(0);
    fireEvent.keyDown(input(), { key: "Enter" });
    expect(ws.framesOfType("send").map((f) => f.text)).toEqual(["line one"]);
    expect(input().value).toBe("");
  });

  it("shows a character counter near the limit and refuses text over it", async () => {
    const rig = renderPage();
    await connectFresh(rig);
    fireEvent.change(input(), { target: { value: "x".repeat(100) } });
    expect(screen.queryByTestId("char-counter")).toBeNull();
    fireEvent.change(input(), { target: { value: "x".repeat(3500) } });
    expect(screen.getByTestId("char-counter").textContent).toBe("3500 / 4000");
    fireEvent.change(input(), { target: { value: "x".repeat(4010) } });
    expect(screen.getByTestId("composer-reason").textContent).toBe("Too long by 10 characters: at most 4000 can be sent.");
    expect((screen.getByRole("button", { name: "Send" }) as HTMLButtonElement).disabled).toBe(true);
  });

  it("counts characters as the server does: an emoji is one", async () => {
    const rig = renderPage();
    const ws = await connectFresh(rig);
    fireEvent.change(input(), { target: { value: "🙂".repeat(4000) } });
    expect(screen.getByTestId("char-counter").textContent).toBe("4000 / 4000");
    expect((screen.getByRole("button", { name: "Send" }) as HTMLButtonElement).disabled).toBe(false);
    fireEvent.change(input(), { target: { value: "🙂".repeat(4001) } });
    expect(screen.getByTestId("composer-reason").textContent).toBe("Too long by 1 character: at most 4000 can be sent.");
    fireEvent.change(input(), { target: { value: "🙂".repeat(4000) } });
    fireEvent.keyDown(input(), { key: "Enter" });
    expect(ws.framesOfType("send").map((f) => f.text)).toEqual(["🙂".repeat(4000)]);
  });

  it("conversation list: titles from events, switch, start new", async () => {
    const rig = renderPage();
    const ws = await connectFresh(rig);
    serve(() => ws.push(ev("2-0", { type: "conversation_renamed", conversation_id: "c1", title: "Trip to Lisbon" })));
    const nav = screen.getByRole("navigation", { name: "Conversations" });
    expect(within(nav).getByRole("button", { name: "Trip to Lisbon" }).getAttribute("aria-current")).toBe("page");
    fireEvent.click(within(nav).getByRole("button", { name: "+ New chat" }));
    const started = ws.framesOfType("start_conversation");
    expect(started).toHaveLength(1);
    expect(screen.getByRole("heading", { level: 1 }).textContent).toBe("New chat");
    fireEvent.click(within(nav).getByRole("button", { name: "Trip to Lisbon" }));
    expect(screen.getByRole("heading", { level: 1 }).textContent).toBe("Trip to Lisbon");
  });
});

describe("WelcomeModal", () => {
  it("on a first visit: names the model, sends the chosen name, and is not shown again", async () => {
    const storage = new MemoryStorage();
    const rig = renderPage({ storage });
    await connectFresh(rig);
    const dialog = screen.getByRole("dialog", { name: "Welcome to chatcore" });
    expect(within(dialog).getByTestId("welcome-model").textContent).toBe("Demo Model");
    const name = within(dialog).getByLabelText(/call you/);
    expect(document.activeElement).toBe(name);
    fireEvent.change(name, { target: { value: "Ada" } });
    fireEvent.click(within(dialog).getByRole("button", { name: "Start chatting" }));
    expect(screen.queryByRole("dialog")).toBeNull();
    expect(rig.server.last.framesOfType("set_profile")).toMatchObject([{ display_name: "Ada" }]);
    expect(storage.getItem("chatcore.web.v1.welcomed")).toBe("1");
  });

  it("Escape closes it without a profile", async () => {
    const rig = renderPage({ storage: new MemoryStorage() });
    await connectFresh(rig);
    fireEvent.keyDown(screen.getByRole("dialog"), { key: "Escape" });
    expect(screen.queryByRole("dialog")).toBeNull();
    expect(rig.server.last.framesOfType("set_profile")).toHaveLength(0);
  });
});

describe("drafts", () => {
  it("a half-written message survives a reload", async () => {
    const storage = new MemoryStorage();
    storage.setItem("chatcore.web.v1.welcomed", "1");
    const first = renderPage({ storage });
    await connectFresh(first);
    fireEvent.change(input(), { target: { value: "half a thought" } });
    await tick(500);
    first.view.unmount();
    renderPage({ storage });
    await tick(0);
    expect(input().value).toBe("half a thought");
  });
});

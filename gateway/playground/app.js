// cells-ws-gateway playground: plain JavaScript, no build step, no dependencies.
// Everything that comes from the network (events, chat, errors) is rendered with textContent,
// never as HTML. The admin key stays in this tab's sessionStorage; tokens stay in the page.
"use strict";

(() => {
  const KEY_STORAGE = "cells-ws-gateway.admin-key";
  const MAX_ITEMS = 200;
  const PRESENCE_MS = 15000;
  const HISTORY_PAGE = 40; // messages per HISTORY page, as Cells' client asks
  const EXAMPLES = {
    "topic.pydio.tree.nodes.changes": {
      Target: { Uuid: "n-1", Path: "/ds/common/hello.txt", Type: "LEAF", Size: "12" },
    },
    "topic.pydio.meta.nodes.changes": {
      Type: "UPDATE_META",
      Target: { Uuid: "n-1", Path: "/ds/common/hello.txt", Type: "LEAF", MetaStore: { color: "\"blue\"" } },
    },
    "topic.pydio.tasks.event": {
      TaskUpdated: { ID: "t-1", JobID: "job-1", Status: "Running", StatusMessage: "Copying files",
        Progress: 0.5, TriggerOwner: "alice" },
      Job: { ID: "job-1", Label: "Copy files" },
    },
    "topic.pydio.idm.event": { Type: "UPDATE", User: { Uuid: "alice", Login: "alice" } },
    "topic.pydio.activity.event": {
      BoxName: "inbox", OwnerType: "USER", OwnerId: "alice",
      Activity: { type: "Create", actor: { id: "bob", name: "bob" },
        object: { type: "Document", name: "/ds/common/report.txt" } },
    },
  };

  const $ = (id) => document.getElementById(id);
  let info = null;
  let events = null;
  const chat = { socket: null, user: null, live: false, pending: [], rooms: new Map(), current: null,
    messages: new Map(), presence: null };

  // -- small helpers ---------------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function status(id, text, kind) {
    const node = $(id);
    node.textContent = text;
    node.dataset.kind = kind || "";
  }

  function prepend(list, item) {
    list.insertBefore(item, list.firstChild);
    while (list.children.length > MAX_ITEMS) list.removeChild(list.lastChild);
  }

  function clock(seconds) {
    const date = seconds ? new Date(Number(seconds) * 1000) : new Date();
    return date.toLocaleTimeString();
  }

  function adminKey() {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const key = adminKey();
    if (key && method !== "GET") headers.Authorization = "Bearer " + key;
    const response = await fetch(path, {
      method, headers, cache: "no-store", credentials: "omit",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const reason = data && data.message ? data.message : response.statusText;
      throw new Error(response.status + ": " + reason);
    }
    return data;
  }

  function wsUrl(path) {
    let host = info.ws_host || location.hostname;
    if (host.includes(":") && !host.startsWith("[")) host = "[" + host + "]";
    // wss:// when the listener serves TLS itself (tls_cert_file), or when this page came over HTTPS.
    const scheme = info.ws_tls || location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + host + ":" + info.ws_port + path;
  }

  function token() {
    return $("token").value.trim();
  }

  function newId() {
    if (window.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
    return "c-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);
  }

  function closeText(event) {
    const hint = event.code === 1006
      ? " - refused at the handshake or unreachable (is this page's origin in allowed_origins?)" : "";
    return "closed (" + event.code + (event.reason ? ": " + event.reason : "") + ")" + hint;
  }

  // -- setup: info, admin key, token -----------------------------------------------------------

  async function loadInfo() {
    try {
      info = await api("GET", "/api/v1/playground");
    } catch (err) {
      status("info", "cannot read /api/v1/playground: " + err.message, "error");
      return;
    }
    if (!info.ws_port) {
      status("info", "the WebSocket listener is not up yet; reload in a moment", "error");
      return;
    }
    status("info", "events: " + wsUrl(info.paths.events) + "   chat: " + wsUrl(info.paths.chat), "ok");
    const origins = (info.allowed_origins || []).map((o) => o.toLowerCase().replace(/\/+$/, ""));
    if (!origins.includes("*") && !origins.includes(location.origin.toLowerCase())) {
      const warning = $("origin-warning");
      warning.textContent = "This page's origin " + location.origin + " is not in allowed_origins: the " +
        "gateway will refuse the browser's WebSocket handshake (403). Add it to GATEWAY_ALLOWED_ORIGINS " +
        "(make run does).";
      warning.hidden = false;
    }
    if (!info.token_minting) {
      $("mint-fields").disabled = true;
      const why = info.identity === "cells"
        ? "identity = cells: paste a token Cells issued (a personal access token, or the Bearer token of a logged-in page)"
        : "this gateway has no jwt_secret: paste a token instead";
      status("mint-status", why, "error");
    }
    if (info.publishing === false) {
      $("publish-form").querySelector("fieldset").disabled = true;
      status("publish-status", "bus_format = cells: events come from Cells itself", "");
    }
  }

  function showKeyState() {
    if (adminKey()) status("key-status", "admin key set for this tab", "ok");
    else status("key-status", "no admin key: minting and publishing need it", "");
  }

  function saveKey(event) {
    event.preventDefault();
    const key = $("admin-key").value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
    showKeyState();
  }

  function forgetKey() {
    sessionStorage.removeItem(KEY_STORAGE);
    $("admin-key").value = "";
    showKeyState();
  }

  async function mint(event) {
    event.preventDefault();
    let workspaces;
    try {
      workspaces = JSON.parse($("mint-workspaces").value || "[]");
    } catch (err) {
      status("mint-status", "workspaces is not valid JSON: " + err.message, "error");
      return;
    }
    const body = {
      user: $("mint-user").value.trim(),
      profile: $("mint-profile").value,
      roles: $("mint-roles").value.split(",").map((r) => r.trim()).filter((r) => r),
      workspaces,
      ttl: parseInt($("mint-ttl").value, 10) || 3600,
    };
    status("mint-status", "minting...", "");
    try {
      const reply = await api("POST", "/api/v1/token", body);
      $("token").value = reply.token;
      status("mint-status", "token for " + reply.user + ", expires at " + clock(reply.expiresAt), "ok");
    } catch (err) {
      status("mint-status", "mint refused: " + err.message, "error");
    }
  }

  // -- events socket ---------------------------------------------------------------------------

  function describe(msg) {
    if (msg.TaskUpdated) {
      const task = msg.TaskUpdated;
      const job = msg.Job || {};
      const progress = typeof task.Progress === "number" ? Math.round(task.Progress * 100) + "%" : "";
      return { kind: "task", type: task.Status || "task",
        detail: [job.Label || task.JobID, task.StatusMessage, progress].filter((x) => x).join(" - ") };
    }
    if (msg["@type"] === "idm") {
      const keys = [["Acl", "RoleID"], ["Role", "Uuid"], ["User", "Login"], ["User", "Uuid"],
        ["Workspace", "UUID"]];
      const hit = keys.find(([obj, field]) => msg[obj] && msg[obj][field]);
      return { kind: "idm", type: msg.Type || "idm",
        detail: hit ? hit[0] + " " + msg[hit[0]][hit[1]] : "" };
    }
    if (msg["@type"] === "activity") {
      const act = msg.Activity || {};
      const actor = act.actor ? act.actor.name || act.actor.id : "";
      const object = act.object ? act.object.name || act.object.id : "";
      return { kind: "activity", type: act.type || "activity", detail: [actor, object].filter((x) => x).join(" -> ") };
    }
    if (msg.Source || msg.Target) {
      const from = msg.Source && msg.Source.Path;
      const to = msg.Target && msg.Target.Path;
      const detail = from && to && from !== to ? from + " -> " + to : to || from || "";
      return { kind: "tree", type: msg.Type || "CREATE", detail };
    }
    return { kind: "other", type: msg["@type"] || "message", detail: "" };
  }

  function addEvent(msg) {
    const { kind, type, detail } = describe(msg);
    const item = el("li", "event");
    item.dataset.kind = kind;
    const position = msg["@position"] ? "@" + msg["@position"].split(":")[1] : "";
    item.append(el("span", "time", clock()), el("span", "kind", kind), el("span", "type", type),
      el("span", "position", position), el("span", "detail", detail));
    const raw = el("details");
    raw.append(el("summary", "", "JSON"), el("pre", "", JSON.stringify(msg, null, 2)));
    item.append(raw);
    prepend($("event-list"), item);
  }

  // The position of the last event shown: connecting again resumes after it ("since").
  let lastPosition = null;

  function onEventFrame(msg) {
    if (msg["@type"] === "subscribed") {
      const until = msg.expiresAt ? ", token expires at " + clock(msg.expiresAt) : "";
      status("events-status", "subscribed as " + msg.user + until + " at position " + msg.position, "ok");
      if (!lastPosition) lastPosition = msg.position;
    } else if (msg["@type"] === "recovered") {
      status("events-status", "recovered " + msg.replayed + " missed event(s), live from " + msg.position, "ok");
    } else if (msg["@type"] === "gap") {
      lastPosition = msg.position;
      status("events-status", "gap (" + msg.reason + "): events were missed and cannot be replayed; " +
        "reload your view", "error");
    } else if (msg["@type"] === "error") {
      status("events-status", "error " + msg.error + ": " + msg.message, "error");
    } else if (msg["@type"] !== "unsubscribed") {
      if (msg["@position"]) lastPosition = msg["@position"];
      addEvent(msg);
    }
  }

  function connectEvents() {
    if (!info || !info.ws_port) return;
    if (!token()) {
      status("events-status", "mint or paste a token first", "error");
      return;
    }
    disconnectEvents();
    const socket = new WebSocket(wsUrl(info.paths.events));
    events = socket;
    status("events-status", "connecting...", "");
    socket.onopen = () => {
      const subscribe = { "@type": "subscribe", ack: true, jwt: token(), recover: true };
      if (lastPosition) subscribe.since = lastPosition;
      socket.send(JSON.stringify(subscribe));
    };
    socket.onmessage = (e) => {
      try {
        onEventFrame(JSON.parse(e.data));
      } catch (err) {
        status("events-status", "unreadable frame: " + err.message, "error");
      }
    };
    socket.onclose = (e) => {
      if (events === socket) status("events-status", closeText(e), e.code === 1000 ? "" : "error");
    };
  }

  function disconnectEvents() {
    if (events) {
      const socket = events;
      events = null;
      socket.close(1000);
      status("events-status", "not connected", "");
    }
  }

  async function publish(event) {
    event.preventDefault();
    let body;
    try {
      body = { topic: $("publish-topic").value, event: JSON.parse($("publish-event").value) };
    } catch (err) {
      status("publish-status", "the event is not valid JSON: " + err.message, "error");
      return;
    }
    try {
      const reply = await api("POST", "/api/v1/publish", body);
      status("publish-status", "published " + reply.published, "ok");
    } catch (err) {
      status("publish-status", "publish refused: " + err.message, "error");
    }
  }

  function showExample() {
    $("publish-event").value = JSON.stringify(EXAMPLES[$("publish-topic").value], null, 1);
  }

  // -- chat socket -----------------------------------------------------------------------------

  function chatSend(obj) {
    if (chat.socket && chat.live) chat.socket.send(JSON.stringify(obj));
    else chat.pending.push(obj);
  }

  function connectChat() {
    if (chat.socket) return true;
    if (!info || !info.ws_port) return false;
    if (!token()) {
      status("chat-status", "mint or paste a token first", "error");
      return false;
    }
    const socket = new WebSocket(wsUrl(info.paths.chat));
    chat.socket = socket;
    chat.live = false;
    status("chat-status", "connecting...", "");
    socket.onopen = () => socket.send(JSON.stringify({ "@type": "subscribe", ack: true, jwt: token() }));
    socket.onmessage = (e) => {
      try {
        onChatFrame(JSON.parse(e.data));
      } catch (err) {
        status("chat-status", "unreadable frame: " + err.message, "error");
      }
    };
    socket.onclose = (e) => {
      if (chat.socket !== socket) return;
      resetChat();
      status("chat-status", closeText(e), e.code === 1000 ? "" : "error");
    };
    chat.presence = setInterval(() => {
      for (const uuid of chat.rooms.keys()) {
        chatSend({ "@type": "JOIN", Room: { Uuid: uuid }, Message: { Message: "PING" } });
      }
    }, PRESENCE_MS);
    return true;
  }

  function resetChat() {
    clearInterval(chat.presence);
    Object.assign(chat, { socket: null, user: null, live: false, pending: [], current: null, presence: null });
    chat.rooms.clear();
    chat.messages.clear();
    renderRooms();
  }

  function disconnectChat() {
    if (!chat.socket) return;
    const socket = chat.socket;
    resetChat();
    socket.close(1000);
    status("chat-status", "not connected", "");
  }

  function onChatFrame(msg) {
    const type = msg["@type"];
    if (type === "subscribed") {
      chat.user = msg.user;
      chat.live = true;
      status("chat-status", "subscribed as " + msg.user, "ok");
      for (const pending of chat.pending.splice(0)) chat.socket.send(JSON.stringify(pending));
    } else if (type === "error") {
      status("chat-status", "error " + msg.error + (msg.request ? " (" + msg.request + ")" : "") + ": " +
        msg.message, "error");
    } else if (type === "ROOM_UPDATE") {
      onRoom(msg.Room);
    } else if (type === "DELETE_MSG") {
      const room = chat.messages.get(msg.Message.RoomUuid);
      if (room) room.delete(msg.Message.Uuid);
      renderMessages();
    } else if (type === undefined && msg.RoomUuid && msg.Uuid) {
      if (!chat.messages.has(msg.RoomUuid)) chat.messages.set(msg.RoomUuid, new Map());
      chat.messages.get(msg.RoomUuid).set(msg.Uuid, msg);
      if (msg.RoomUuid === chat.current) renderMessages();
    }
  }

  function onRoom(room) {
    if (!room || !room.Uuid) return;
    if ((room.Users || []).includes(chat.user)) {
      // Newly joined: ask for its latest page, as Cells' ChatClient does (HISTORY also re-sends
      // the ROOM_UPDATE, which by then finds the room known and asks nothing more).
      if (!chat.rooms.has(room.Uuid)) {
        chatSend({ "@type": "HISTORY", Room: { Uuid: room.Uuid },
          Message: { Message: JSON.stringify({ Offset: 0, Limit: HISTORY_PAGE }) } });
      }
      chat.rooms.set(room.Uuid, room);
      if (!chat.current) chat.current = room.Uuid;
    } else {
      chat.rooms.delete(room.Uuid);
      chat.messages.delete(room.Uuid);
      if (chat.current === room.Uuid) chat.current = chat.rooms.keys().next().value || null;
    }
    renderRooms();
  }

  function roomName(room) {
    const type = room.Type || "GLOBAL";
    return room.RoomLabel || type + (room.RoomTypeObject ? " " + room.RoomTypeObject : "");
  }

  function renderRooms() {
    const list = $("room-list");
    list.replaceChildren();
    for (const room of chat.rooms.values()) {
      const item = el("li");
      const button = el("button", room.Uuid === chat.current ? "chip current" : "chip", roomName(room));
      button.type = "button";
      button.addEventListener("click", () => {
        chat.current = room.Uuid;
        renderRooms();
      });
      item.append(button);
      list.append(item);
    }
    const members = $("member-list");
    members.replaceChildren();
    const current = chat.rooms.get(chat.current);
    for (const user of current ? current.Users || [] : []) members.append(el("li", "chip member", user));
    renderMessages();
  }

  function renderMessages() {
    const list = $("message-list");
    list.replaceChildren();
    const room = chat.messages.get(chat.current);
    const ordered = room ? [...room.values()].sort((a, b) => (a.Seq || 0) - (b.Seq || 0)) : [];
    for (const message of ordered.slice(-MAX_ITEMS)) {
      const item = el("li", "message");
      item.append(el("span", "time", clock(message.Timestamp)), el("span", "author", message.Author),
        el("span", "text", message.Message));
      if (message.Edited) item.append(el("span", "edited", "(edited)"));
      list.append(item);
    }
    list.scrollTop = list.scrollHeight;
  }

  function join(event) {
    event.preventDefault();
    if (!connectChat()) return;
    const type = $("room-type").value;
    const room = { Type: type };
    const object = $("room-object").value.trim();
    if (object) room.RoomTypeObject = object;
    chatSend({ "@type": "JOIN", Room: room });
  }

  function leave() {
    if (chat.current) chatSend({ "@type": "LEAVE", Room: { Uuid: chat.current } });
  }

  function post(event) {
    event.preventDefault();
    const text = $("post-text").value;
    if (!text.trim()) return;
    if (!chat.live || !chat.current) {
      status("chat-status", "join a room first", "error");
      return;
    }
    chatSend({ "@type": "POST", Message: { RoomUuid: chat.current, Message: text, ClientMessageId: newId() } });
    $("post-text").value = "";
  }

  // -- wiring ----------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("admin-key").value = adminKey();
    showKeyState();
    showExample();
    $("key-form").addEventListener("submit", saveKey);
    $("key-forget").addEventListener("click", forgetKey);
    $("mint-form").addEventListener("submit", mint);
    $("events-connect").addEventListener("click", connectEvents);
    $("events-disconnect").addEventListener("click", disconnectEvents);
    $("events-clear").addEventListener("click", () => $("event-list").replaceChildren());
    $("publish-form").addEventListener("submit", publish);
    $("publish-topic").addEventListener("change", showExample);
    $("join-form").addEventListener("submit", join);
    $("leave").addEventListener("click", leave);
    $("chat-disconnect").addEventListener("click", disconnectChat);
    $("post-form").addEventListener("submit", post);
    loadInfo();
  });
})();

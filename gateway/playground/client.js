// A WebSocket client for the gateway's events socket that reconnects and resumes.
//
// Copy it into your application. It subscribes with "recover", remembers the "@position" of the
// last event it handed you, and after a dropped connection reconnects with exponential backoff
// (with jitter) and subscribes again with "since": you get exactly the events you missed, then live
// ones. When the gateway cannot replay (a restart, a history too short), you get onGap: reload your
// state (list the folder again). docs/PROTOCOL.md, "Resuming", has the wire format.
//
//   const client = new GatewayClient("wss://files.example.com/ws", {
//     token: () => currentAccessToken(),      // called at each (re)connection
//     onEvent: (event) => render(event),      // every event, once, in order
//     onGap: (info) => reloadEverything(),    // the gateway could not replay: reload
//     onStatus: (status) => showBadge(status) // "connecting", "live", "recovered N", "closed ..."
//   });
//   client.start();  ...  client.stop();
"use strict";

class GatewayClient {
  constructor(url, options) {
    this.url = url;
    this.options = Object.assign({ minDelay: 500, maxDelay: 30000 }, options);
    this.position = null; // the last "@position" handed to onEvent
    this.socket = null;
    this.attempt = 0;
    this.stopped = true;
    this.timer = null;
  }

  start() {
    this.stopped = false;
    this._connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000, "client stopped");
  }

  async _connect() {
    this._status("connecting");
    let token;
    try {
      token = await this.options.token();
    } catch (err) {
      this._retry("no token: " + err);
      return;
    }
    if (this.stopped) return;
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.onopen = () => {
      const subscribe = { "@type": "subscribe", jwt: token, recover: true };
      if (this.position) subscribe.since = this.position;
      socket.send(JSON.stringify(subscribe));
    };
    socket.onmessage = (message) => this._receive(JSON.parse(message.data));
    socket.onclose = (closed) => {
      if (this.socket !== socket) return;
      this.socket = null;
      // 4001: the token was refused or expired; 4003: another user. A fresh token may help once.
      this._retry("closed " + closed.code + (closed.reason ? " " + closed.reason : ""));
    };
  }

  _receive(frame) {
    switch (frame["@type"]) {
      case "subscribed":
        this.attempt = 0;
        if (!this.position) this.position = frame.position; // a first start: live from here
        this._status("live");
        return;
      case "recovered":
        this._status("recovered " + frame.replayed);
        return;
      case "gap":
        this.position = frame.position; // events after this point are complete again
        if (this.options.onGap) this.options.onGap(frame);
        this._status("gap (" + frame.reason + ")");
        return;
      case "error":
        this._status("error " + frame.error + ": " + frame.message);
        return;
    }
    if (frame["@position"]) this.position = frame["@position"];
    this.options.onEvent(frame);
  }

  _retry(why) {
    this._status(why);
    if (this.stopped) return;
    const ceiling = Math.min(this.options.maxDelay, this.options.minDelay * 2 ** this.attempt);
    this.attempt += 1;
    this.timer = setTimeout(() => this._connect(), ceiling / 2 + Math.random() * (ceiling / 2));
  }

  _status(status) {
    if (this.options.onStatus) this.options.onStatus(status);
  }
}

if (typeof module !== "undefined") module.exports = { GatewayClient };

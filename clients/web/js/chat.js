// Text chat of a consultation or a lecture: a drug name spelled out, a question from the hall.
// The server decides who receives what (in a broadcast the audience's messages are questions for
// the moderators); this panel shows what arrives and sends what is typed.

import { el, toast, reasonText } from "./ui.js";
import { t, formatTime, onLanguageChange } from "./i18n.js";
import { ServerError } from "./signaling.js";

export const MAX_CHAT_CHARS = 1000;  // protocol/signaling.py MAX_CHAT_CHARS

export class ChatPanel {
  /** `root`: the panel element; it gets a list, a text box and a send button. */
  constructor(conf, root) {
    this.conf = conf;
    this.root = root;
    this.messages = [];
    this.list = el("ol.chat-list", { "aria-live": "polite" });
    // an <input> is a text box and a <button> in a form submits it, by default
    this.input = el("input.chat-input", { maxlength: String(MAX_CHAT_CHARS), autocomplete: "off" });
    this.button = el("button.chat-send");
    this.form = el("form.chat-form", {}, this.input, this.button);
    this.title = el("h2");
    root.replaceChildren(this.title, this.list, this.form);
    this.form.addEventListener("submit", (e) => { e.preventDefault(); this.send(); });
    conf.sig.on("chat_message", (m) => this._received(m));
    onLanguageChange(() => this.render({ relist: true }));
    this.render();
  }

  /** Send what is typed; the box keeps it if the server refuses (rate limit, no permission). */
  async send() {
    const text = this.input.value.trim();
    if (!text || this.conf.ended) return;
    try {
      await this.conf.sig.request({ type: "chat", text });
      this.input.value = "";
    } catch (e) {
      toast(e instanceof ServerError ? reasonText(e.reason) : t("chat.not_sent"));
    }
  }

  _received(m) {
    this.messages.push(m);
    this.list.append(this._item(m));
    this.list.scrollTop = this.list.scrollHeight;
  }

  _item(m) {
    const mine = this.conf.room.self && m.participant_id === this.conf.room.self.participant_id;
    return el(`li.chat-item${m.to_moderators ? ".question" : ""}${mine ? ".mine" : ""}`, { dataset: { id: m.message_id } },
      el("span.chat-meta", {}, `${m.name} · ${formatTime(m.time * 1000)}`,
        m.to_moderators ? el("span.chat-tag", {}, t("chat.question")) : null),
      el("span.chat-text", {}, m.text));
  }

  /** Visibility, labels and whether we may write; `relist` redraws the messages (new language). */
  render({ relist = false } = {}) {
    const may = this.conf.room.may("chat") && !this.conf.ended;
    this.root.hidden = !this.conf.room.self || !(may || this.messages.length);
    this.title.textContent = t("panel.chat");
    this.input.placeholder = this.conf.room.isModerator || this.conf.page !== "broadcast"
      ? t("chat.placeholder") : t("chat.placeholder_question");
    this.button.textContent = t("btn.send");
    this.input.disabled = this.button.disabled = !may;
    if (relist) this.list.replaceChildren(...this.messages.map((m) => this._item(m)));
  }
}

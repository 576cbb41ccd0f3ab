// agent-sft viewer: an episode table with filters, and each episode's steps, prompts, sft rows and drops.
// Data arrive as scripts calling AgentSFTViewer.meta/rows/chunk (so the page also works from file://).
// Everything shown comes from model output and environments: it is set as text (createTextNode, textContent),
// never parsed as HTML.
(function () {
  "use strict";

  var PAGE = 50; // table rows per page
  var KEEP_CHUNKS = 4; // chunks kept in memory once loaded

  var meta = null;
  var rows = [];
  var F = {}; // index field -> position in a record
  var chunks = {};
  var chunkOrder = [];
  var waiting = {};
  var byId = null;
  var shown = [];
  var page = 0;
  var sort = { key: null, dir: 1 };

  window.AgentSFTViewer = {
    meta: function (m) {
      meta = m;
    },
    rows: function (records) {
      for (var i = 0; i < records.length; i++) rows.push(records[i]);
    },
    chunk: function (k, episodes) {
      chunks[k] = episodes;
      chunkOrder.push(k);
      while (chunkOrder.length > KEEP_CHUNKS) delete chunks[chunkOrder.shift()];
      var w = waiting[k] || [];
      delete waiting[k];
      w.forEach(function (f) { f(episodes); });
    },
  };

  // --- DOM helpers: text only -----------------------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  function add(parent, kids) {
    if (kids === null || kids === undefined) return parent;
    if (!Array.isArray(kids)) kids = [kids];
    kids.forEach(function (k) {
      if (k === null || k === undefined) return;
      parent.appendChild(typeof k === "object" && k.nodeType ? k : document.createTextNode(String(k)));
    });
    return parent;
  }

  function el(tag, cls, kids) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    return add(e, kids);
  }

  function clear(e) {
    while (e.firstChild) e.removeChild(e.firstChild);
    return e;
  }

  function fmt(x) {
    if (x === null || x === undefined) return "\u2013";
    if (typeof x === "number" && !Number.isInteger(x)) return x.toFixed(3);
    return String(x);
  }

  function details(summary, kids, cls, open) {
    var d = el("details", cls, [el("summary", null, summary)]);
    if (open) d.open = true;
    return add(d, kids);
  }

  function pre(text, cls) { return el("pre", cls, text === null || text === undefined ? "" : String(text)); }

  function pretty(text) {
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch (e) { return text; }
  }

  // --- the index: filters, table, paging ------------------------------------------------------------

  function col(name) { return F[name]; }

  // A missing value (null or "") is one choice of its own, shown as "(none)"; the choices keep the raw values, and
  // a list's option values are their positions, so no value can pass for another or for "any".
  var ANY = {};
  var choices = {};

  function blank(v) { return v === null || v === undefined || v === "" ? null : v; }

  function distinct(name) {
    var seen = {}, out = [], none = false;
    rows.forEach(function (r) {
      var v = blank(r[col(name)]);
      if (v === null) none = true;
      else if (!Object.prototype.hasOwnProperty.call(seen, v)) { seen[v] = true; out.push(v); }
    });
    out.sort();
    return none ? [null].concat(out) : out;
  }

  function choice(name) {
    var v = $("f-" + name).value;
    return v === "" ? ANY : choices[name][Number(v)];
  }

  function options(select, values, labels) {
    clear(select);
    values.forEach(function (v, i) {
      var o = el("option", null, labels ? labels[i] : v);
      o.value = v;
      select.appendChild(o);
    });
  }

  function num(id) {
    var v = $(id).value;
    return v === "" ? null : Number(v);
  }

  function filters() {
    var text = $("f-text").value.toLowerCase().split(/\s+/).filter(Boolean);
    var score = $("f-score").value;
    return {
      env: choice("env"), task_type: choice("task_type"), split: choice("split"),
      success: $("f-success").value, end_reason: choice("end_reason"), text: text,
      rmin: num("f-reward-min"), rmax: num("f-reward-max"),
      score: score === "" ? -1 : Number(score), smin: num("f-score-min"), smax: num("f-score-max"),
    };
  }

  function keep(r, f) {
    var named = ["env", "task_type", "split", "end_reason"];
    for (var n = 0; n < named.length; n++) {
      var want = f[named[n]];
      if (want !== ANY && blank(r[F[named[n]]]) !== want) return false;
    }
    if (f.success && String(r[F.success]) !== f.success) return false;
    var reward = r[F.reward];
    if (f.rmin !== null && !(reward >= f.rmin)) return false;
    if (f.rmax !== null && !(reward <= f.rmax)) return false;
    if (f.score >= 0 && (f.smin !== null || f.smax !== null)) {
      var s = r[F.scores][f.score];
      if (s === null || s === undefined) return false;
      if (f.smin !== null && !(s >= f.smin)) return false;
      if (f.smax !== null && !(s <= f.smax)) return false;
    }
    if (f.text.length) {
      var hay = (r[F.id] + " " + r[F.task_id] + " " + r[F.env] + " " + r[F.task_type] + " " + r[F.text]).toLowerCase();
      for (var i = 0; i < f.text.length; i++) if (hay.indexOf(f.text[i]) < 0) return false;
    }
    return true;
  }

  var COLUMNS = [
    ["id", "Episode"], ["env", "Env"], ["task_id", "Task"], ["task_type", "Task type"], ["split", "Split"],
    ["success", "Success"], ["end_reason", "End reason"], ["steps", "Steps"], ["reward", "Reward"],
    ["invalid", "Invalid"],
  ];

  function value(r, key) {
    if (key.indexOf("score:") === 0) return r[F.scores][Number(key.slice(6))];
    return r[F[key]];
  }

  function apply() {
    var f = filters();
    shown = [];
    for (var i = 0; i < rows.length; i++) if (keep(rows[i], f)) shown.push(i);
    if (sort.key) {
      shown.sort(function (a, b) {
        var x = value(rows[a], sort.key), y = value(rows[b], sort.key);
        if (x === y) return a - b;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        return (x < y ? -1 : 1) * sort.dir;
      });
    }
    page = 0;
    render();
  }

  function headers() {
    var tr = clear($("head"));
    var cols = COLUMNS.slice();
    var s = $("f-score").value;
    if (s !== "") cols.push(["score:" + s, meta.score_names[Number(s)]]);
    cols.forEach(function (c) {
      var th = el("th", sort.key === c[0] ? "sorted" : null, c[1] + (sort.key === c[0] ? (sort.dir > 0 ? " \u25b2" : " \u25bc") : ""));
      th.addEventListener("click", function () {
        sort.dir = sort.key === c[0] ? -sort.dir : 1;
        sort.key = c[0];
        apply();
      });
      tr.appendChild(th);
    });
    return cols;
  }

  function render() {
    var cols = headers();
    var body = clear($("rows"));
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    page = Math.min(page, pages - 1);
    shown.slice(page * PAGE, (page + 1) * PAGE).forEach(function (i) {
      var r = rows[i];
      var tr = el("tr", r[F.success] ? "won" : "lost");
      cols.forEach(function (c) {
        var v = value(r, c[0]);
        var td = el("td", "c-" + c[0].replace(":", "-"));
        if (c[0] === "id") {
          var a = el("a", "episode-link", v);
          a.href = "#e=" + encodeURIComponent(v);
          td.appendChild(a);
        } else {
          add(td, c[0] === "success" ? (v ? "yes" : "no") : fmt(v));
        }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    $("count").textContent = shown.length + " of " + rows.length + " episodes";
    $("page").textContent = "page " + (page + 1) + " of " + pages;
    $("prev").disabled = page === 0;
    $("next").disabled = page >= pages - 1;
  }

  function setUpFilters() {
    ["env", "task_type", "split", "end_reason"].forEach(function (name) {
      var values = choices[name] = distinct(name);
      options($("f-" + name), [""].concat(values.map(function (v, i) { return String(i); })),
              ["any"].concat(values.map(function (v) { return v === null ? "(none)" : String(v); })));
    });
    options($("f-success"), ["", "true", "false"], ["any", "yes", "no"]);
    var idx = [], labels = [];
    meta.score_names.forEach(function (n, i) {
      if (rows.some(function (r) { return r[F.scores][i] !== null; })) { idx.push(String(i)); labels.push(n); }
    });
    options($("f-score"), [""].concat(idx), ["(none)"].concat(labels));
    var timer = null;
    // Typing applies after a pause, a choice in a list at once. A typed field's `change` (fired when it loses
    // focus) is not listened to: it would redraw the table under the click that took the focus away.
    $("filters").addEventListener("input", function (e) {
      if (e.target.tagName === "SELECT") return;
      clearTimeout(timer);
      timer = setTimeout(apply, 150);
    });
    $("filters").addEventListener("change", function (e) {
      if (e.target.tagName === "SELECT") apply();
    });
    $("filters").addEventListener("submit", function (e) { e.preventDefault(); apply(); });
    $("f-clear").addEventListener("click", function () { $("filters").reset(); apply(); });
    $("prev").addEventListener("click", function () { page--; render(); });
    $("next").addEventListener("click", function () { page++; render(); });
  }

  // --- one episode -----------------------------------------------------------------------------------

  function loadChunk(k, done) {
    if (chunks[k]) return done(chunks[k]);
    if (waiting[k]) return waiting[k].push(done);
    waiting[k] = [done];
    var s = document.createElement("script");
    s.src = "data/chunks/" + Number(k) + ".js";
    s.onload = function () { s.remove(); };
    s.onerror = function () {
      s.remove();
      var w = waiting[k] || [];
      delete waiting[k];
      w.forEach(function (f) { f(null); });
    };
    document.head.appendChild(s);
  }

  // The messages the policy saw at a step: records.prompt_of's rule.
  function promptOf(messages, start, end) {
    var head = start > 0 && messages.length && messages[0].role === "system" ? [messages[0]] : [];
    return head.concat(messages.slice(start, end));
  }

  function toolCalls(calls) {
    return el("div", "tool-calls", calls.map(function (c) {
      var fn = c.function || c;
      return el("div", "tool-call", [el("span", "label", "tool call "), el("code", "call-name", fn.name || ""),
        pre(pretty(fn.arguments || ""), "call-arguments")]);
    }));
  }

  function message(m) {
    var box = el("div", "message role-" + String(m.role).replace(/[^a-z_]/g, ""), [el("div", "role", m.role)]);
    if (m.reasoning_content) box.appendChild(el("div", "reasoning", [el("span", "label", "reasoning"), pre(m.reasoning_content)]));
    box.appendChild(pre(m.content, "content"));
    if (m.tool_calls && m.tool_calls.length) box.appendChild(toolCalls(m.tool_calls));
    if (m.tool_call_id) box.appendChild(el("div", "label", "answers call " + m.tool_call_id));
    return box;
  }

  function field(dl, name, v) {
    dl.appendChild(el("dt", null, name));
    dl.appendChild(el("dd", null, fmt(v)));
  }

  function stepView(ep, s) {
    var prompt = promptOf(ep.messages, s.prompt_start, s.prompt_end);
    var badges = el("span", "badges", [
      el("span", s.valid ? "badge ok" : "badge bad", s.valid ? "valid" : "invalid: " + (s.invalid_reason || "")),
      el("span", "badge", "reward " + fmt(s.reward)),
      el("span", "badge", s.done ? "done" : "not done"),
    ]);
    var box = el("section", "step", [el("h3", null, ["Step " + s.index + " ", badges])]);
    box.appendChild(el("div", "part observation", [el("div", "label", "observation"), pre(s.observation)]));
    box.appendChild(details("prompt the policy saw (" + prompt.length + " messages)", [
      el("div", "messages", prompt.map(message)),
      details("as JSON", pre(JSON.stringify(prompt, null, 2), "prompt-json"), "json"),
    ], "prompt"));
    if (s.reasoning !== null && s.reasoning !== undefined) {
      box.appendChild(el("div", "part reasoning", [el("div", "label", "reasoning"),
        s.reasoning ? pre(s.reasoning) : el("div", "muted", "(an empty <think> block)")]));
    }
    box.appendChild(el("div", "part response", [el("div", "label", "response"), pre(s.response)]));
    if (s.tool_calls) box.appendChild(toolCalls(s.tool_calls));
    box.appendChild(el("div", "part action", [el("span", "label", "action "), el("code", "action-text", s.action || "(none)")]));
    var extra = el("dl", "step-extra");
    field(extra, "finish reason", s.finish_reason);
    field(extra, "prompt tokens", s.prompt_tokens);
    field(extra, "completion tokens", s.completion_tokens);
    field(extra, "latency (s)", s.latency_s);
    box.appendChild(details("info", [extra, pre(pretty(s.info))], "info"));
    return box;
  }

  function sftView(ep) {
    var box = el("section", "sft", [el("h3", null, "sft rows (" + ep.sft.length + ")")]);
    if (!ep.sft.length) box.appendChild(el("p", "muted", meta.has_sft ? "This episode gave no sft rows." : "The folder has no sft config."));
    ep.sft.forEach(function (r) {
      var msgs = r.messages.map(function (m) { return typeof m === "number" ? ep.messages[m] : m; });
      var title = (r.step === null ? "whole episode" : "step " + r.step) + " \u00b7 reward " + fmt(r.reward) +
        " \u00b7 " + (r.valid ? "valid" : "not valid") + " \u00b7 " + msgs.length + " messages";
      box.appendChild(details(title, el("div", "messages", msgs.map(message)), "sft-row"));
    });
    return box;
  }

  function dropsView(ep) {
    var box = el("section", "drops", [el("h3", null, "Builds that leave it out")]);
    if (!meta.has_scores) return add(box, el("p", "muted", "The folder has no scores config (written by a build)."));
    if (!ep.scored) return add(box, el("p", "muted", "Not scored yet (collected after the last build)."));
    if (!ep.dropped_by.length) return add(box, el("p", "muted", "None: every build keeps it."));
    return add(box, el("ul", null, ep.dropped_by.map(function (d) {
      return el("li", "drop", [el("code", null, d.config), " by " + d.reason]);
    })));
  }

  function episodeView(ep, r) {
    var view = clear($("episode-view"));
    var back = el("a", "back", "\u2190 all episodes");
    back.href = "#";
    view.appendChild(back);
    view.appendChild(el("h2", null, "Episode " + ep.id));
    view.appendChild(el("p", "goal", ep.goal));
    var dl = el("dl", "episode-meta");
    field(dl, "env", ep.env);
    field(dl, "task", ep.task_id);
    field(dl, "task type", ep.task_type);
    field(dl, "split", ep.split + " (game split " + fmt(ep.game_split) + ")");
    field(dl, "sample, seed", ep.sample_index + ", " + ep.seed);
    field(dl, "policy", ep.policy.kind + (ep.policy.model ? " " + ep.policy.model : ""));
    field(dl, "prompt style", ep.prompt_style);
    field(dl, "success", ep.success ? "yes" : "no");
    field(dl, "end reason", ep.end_reason);
    field(dl, "final reward", ep.final_reward);
    field(dl, "steps (invalid)", ep.episode_length + " (" + ep.num_invalid + ")");
    field(dl, "duration (s)", ep.duration_s);
    if (ep.error) field(dl, "error", ep.error);
    meta.score_names.forEach(function (n, i) {
      if (r[F.scores][i] !== null) field(dl, n, r[F.scores][i]);
    });
    view.appendChild(dl);
    view.appendChild(dropsView(ep));
    view.appendChild(sftView(ep));
    if (ep.tools) view.appendChild(details("tools offered", pre(pretty(ep.tools)), "tools"));
    view.appendChild(details("extra", pre(pretty(ep.extra)), "extra"));
    var steps = el("section", "steps", [el("h3", null, "Steps (" + ep.steps.length + ")")]);
    ep.steps.forEach(function (s) { steps.appendChild(stepView(ep, s)); });
    view.appendChild(steps);
  }

  function show() {
    var m = /^#e=(.+)$/.exec(location.hash);
    var list = $("list-view"), view = $("episode-view");
    if (!m) {
      view.hidden = true;
      list.hidden = false;
      return;
    }
    var id = decodeURIComponent(m[1]);
    if (!byId) {
      byId = new Map();
      rows.forEach(function (r, i) { byId.set(r[F.id], i); });
    }
    list.hidden = true;
    view.hidden = false;
    clear(view).appendChild(el("p", "muted", "Loading episode " + id + " \u2026"));
    var r = rows[byId.get(id)];
    if (!r) return clear(view).appendChild(el("p", "error", "No episode " + id + " in this folder."));
    loadChunk(r[F.chunk], function (episodes) {
      if (location.hash !== m[0]) return;
      var ep = (episodes || []).find(function (e) { return e.id === id; });
      if (!ep) return clear(view).appendChild(el("p", "error", "Cannot read data/chunks/" + r[F.chunk] + ".js."));
      episodeView(ep, r);
      window.scrollTo(0, 0);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!meta) {
      add($("count"), "No data: data/meta.js did not load (write the folder with `agent-sft view DIR`).");
      return;
    }
    meta.fields.forEach(function (name, i) { F[name] = i; });
    $("source").textContent = meta.title + " \u00b7 " + meta.episodes + " episodes \u00b7 written " + meta.written_at;
    document.title = meta.folder + " \u00b7 agent-sft viewer";
    setUpFilters();
    apply();
    window.addEventListener("hashchange", show);
    show();
    document.body.setAttribute("data-ready", "1");
  });
})();

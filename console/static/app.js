// sweeper console: relative times that stay current, and the live page's
// stream. No framework, no inline script (the CSP forbids it), nothing from
// another origin. Every value from the server is inserted as text.
"use strict";

(function () {
  function span(sec) {
    if (sec < 60) return Math.round(sec) + " s";
    if (sec < 3600) return Math.floor(sec / 60) + " min";
    if (sec < 86400) {
      var m = Math.floor((sec % 3600) / 60);
      return Math.floor(sec / 3600) + " h" + (m ? " " + m + " min" : "");
    }
    var h = Math.floor((sec % 86400) / 3600);
    return Math.floor(sec / 86400) + " d" + (h ? " " + h + " h" : "");
  }

  function relative(iso) {
    var t = Date.parse(iso);
    if (isNaN(t)) return null;
    var d = (Date.now() - t) / 1000;
    if (d < 0) return "in " + span(-d);
    if (d < 1) return "just now";
    return span(d) + " ago";
  }

  function refresh() {
    document.querySelectorAll("time[data-rel]").forEach(function (el) {
      var r = relative(el.getAttribute("datetime"));
      if (r !== null) el.textContent = r;
    });
  }

  function cell(text, cls) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    var b = document.createElement("bdi");
    b.className = "clip";
    b.textContent = text;
    td.appendChild(b);
    return td;
  }

  function live() {
    var table = document.getElementById("live");
    var state = document.getElementById("live-state");
    if (!table || !window.EventSource) return;
    var body = table.tBodies[0];
    var es = new EventSource("/live/events");
    es.onopen = function () {
      state.textContent = "connected";
      state.dataset.state = "open";
    };
    es.onerror = function () {
      state.textContent = "reconnecting…";
      state.dataset.state = "error";
    };
    es.addEventListener("stuck", function (msg) {
      var e;
      try { e = JSON.parse(msg.data); } catch (err) { return; }
      var tr = document.createElement("tr");
      tr.className = "new";
      tr.dataset.id = String(e.id);
      var when = document.createElement("td");
      var t = document.createElement("time");
      t.setAttribute("datetime", e.at);
      t.setAttribute("data-rel", "");
      t.title = e.at_utc;
      t.textContent = relative(e.at) || e.at_utc;
      when.appendChild(t);
      tr.appendChild(when);
      var idc = document.createElement("td");
      idc.className = "id";
      var a = document.createElement("a");
      // href is built by the server from the id (path-escaped, same origin).
      if (typeof e.href === "string" && e.href.indexOf("/delegations/") === 0) a.href = e.href;
      var b = document.createElement("bdi");
      b.className = "clip";
      b.textContent = e.delegation_id;
      a.appendChild(b);
      idc.appendChild(a);
      tr.appendChild(idc);
      tr.appendChild(cell(e.reason));
      tr.appendChild(cell(e.caller_id));
      tr.appendChild(cell(e.callee_id));
      tr.appendChild(cell(e.actor));
      body.insertBefore(tr, body.firstChild);
      while (body.rows.length > 500) body.deleteRow(body.rows.length - 1);
      var empty = document.getElementById("live-empty");
      if (empty) empty.remove();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    refresh();
    setInterval(refresh, 15000);
    live();
  });
})();

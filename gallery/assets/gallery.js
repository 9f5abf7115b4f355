// The static gallery: the page carries every item as JSON and shows one page of them, filtered
// by state and searched by prompt, from the address's ?state=, ?q= and ?from=. Text goes in
// with textContent only, so a prompt is never read as markup.
(function () {
  "use strict";
  var data = document.getElementById("gallery-data");
  if (!data) return;
  var items = JSON.parse(data.textContent);
  var per = parseInt(document.body.getAttribute("data-per-page"), 10) || 100;
  var params = new URLSearchParams(location.search);
  var state = params.get("state") || "";
  var rawQ = params.get("q") || "";
  var q = rawQ.trim().toLowerCase();
  var from = Math.max(0, parseInt(params.get("from") || "0", 10) || 0);

  var hits = items.filter(function (it) {
    if (state && it.state !== state) return false;
    if (!q) return true;
    return it.prompt.toLowerCase().indexOf(q) >= 0 || it.id.toLowerCase().indexOf(q) >= 0;
  });
  if (from >= hits.length) from = 0;
  var shown = hits.slice(from, from + per);

  var tpl = document.getElementById("item-template").content.firstElementChild;
  var grid = document.getElementById("grid");
  grid.textContent = "";
  shown.forEach(function (it) {
    var el = tpl.cloneNode(true);
    el.className = "item state-" + it.state;
    el.setAttribute("data-state", it.state);
    el.setAttribute("data-id", it.id);
    var a = el.querySelector(".thumb"), img = a.querySelector("img"), ph = a.querySelector(".placeholder");
    if (it.image) a.setAttribute("href", it.image); else a.removeAttribute("href");
    if (it.thumb) {
      img.setAttribute("src", it.thumb);
      img.hidden = false; ph.hidden = true;
    } else {
      img.removeAttribute("src");
      img.hidden = true; ph.hidden = false;
      ph.textContent = it.missing || it.state;
    }
    el.querySelector(".state").textContent = it.state;
    el.querySelector(".id").textContent = it.id;
    var p = el.querySelector(".prompt");
    p.textContent = it.prompt;
    p.title = it.prompt;
    var r = el.querySelector(".reason");
    var why = (it.reason || "") + (it.reason && it.error ? ": " : "") + (it.error || "");
    r.textContent = why;
    r.hidden = !why;
    grid.appendChild(el);
  });

  function href(st, query, at) {
    var u = new URLSearchParams();
    if (st) u.set("state", st);
    if (query) u.set("q", query);
    if (at > 0) u.set("from", String(at));
    var s = u.toString();
    return s ? "?" + s : "?";
  }
  document.querySelectorAll("nav.states a").forEach(function (a) {
    var st = a.getAttribute("data-state");
    a.setAttribute("href", href(st, rawQ, 0));
    a.classList.toggle("selected", st === state);
  });
  var form = document.querySelector("form.search");
  form.elements.state.value = state;
  form.elements.q.value = rawQ;

  var link = function (id, at) {
    var a = document.getElementById(id);
    if (at === null) { a.hidden = true; return; }
    a.hidden = false;
    a.setAttribute("href", href(state, rawQ, at));
  };
  link("first", from > 0 ? 0 : null);
  link("prev", from > 0 ? Math.max(0, from - per) : null);
  link("next", from + per < hits.length ? from + per : null);
  var where = document.getElementById("where");
  where.textContent = hits.length ? (from + 1) + "–" + (from + shown.length) + " of " + hits.length : "";
  var status = document.getElementById("status");
  var what = (state ? state + " " : "") + "image" + (hits.length === 1 ? "" : "s");
  status.textContent = hits.length + " " + what + (q ? " matching “" + rawQ.trim() + "”" : "") +
    (hits.length ? "" : ". Nothing to show.");
})();

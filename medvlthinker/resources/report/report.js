// The sample browser: rows are built from the embedded JSON; the filter buttons hide the rows that do not match.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("samples-data").textContent);
  var samples = data.samples;
  var body = document.getElementById("samples-body");
  var state = { benchmark: "all", status: "all", model: "all" };

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) node.textContent = String(text);  // never innerHTML: outputs are untrusted
    return node;
  }

  samples.forEach(function (s) {
    var tr = el("tr", { "class": "sample", "data-benchmark": s.benchmark, "data-status": s.status, "data-model": s.model });
    var thumbs = el("td", { "class": "thumbs" });
    var uris = data.thumbnails[String(s.dataset_index)] || [];
    uris.forEach(function (uri, i) { thumbs.appendChild(el("img", { src: uri, alt: "image " + (i + 1) })); });
    if (!uris.length) thumbs.appendChild(el("span", { "class": "meta" }, s.num_images ? "(image not loaded)" : "(text only)"));
    tr.appendChild(thumbs);

    var q = el("td");
    q.appendChild(el("div", { "class": "meta" }, s.benchmark + " · #" + s.dataset_index + " · " + s.model));
    q.appendChild(el("div", {}, s.question));
    var ol = el("ol");
    Object.keys(s.options).forEach(function (letter) {
      var cls = (letter === s.answer_label ? "gold " : "") + (letter === s.pred ? "picked" : "");
      ol.appendChild(el("li", { "class": cls.trim() }, letter + ". " + s.options[letter]));
    });
    q.appendChild(ol);
    tr.appendChild(q);

    tr.appendChild(el("td", {}, s.answer_label + ". " + s.answer));
    var out = el("td");
    out.appendChild(el("pre", { "class": "output" + (s.output_note ? " blank" : "") }, s.output));
    if (s.output_note) out.appendChild(el("div", { "class": "meta blank-note" }, s.output_note));
    if (s.truncated) out.appendChild(el("div", { "class": "meta" }, "(output cut to " + s.output.length + " characters)"));
    tr.appendChild(out);

    var verdict = el("td");
    verdict.appendChild(el("span", { "class": "badge " + s.status }, s.status));
    verdict.appendChild(el("div", { "class": "meta" }, "predicted: " + s.pred));
    if (s.num_rollouts > 1) verdict.appendChild(el("div", { "class": "meta" }, s.num_correct + "/" + s.num_rollouts + " rollouts correct"));
    tr.appendChild(verdict);
    body.appendChild(tr);
  });

  function apply() {
    var shown = 0;
    Array.prototype.forEach.call(body.querySelectorAll("tr.sample"), function (tr) {
      var ok = ["benchmark", "status", "model"].every(function (k) {
        return state[k] === "all" || tr.getAttribute("data-" + k) === state[k];
      });
      tr.hidden = !ok;
      if (ok) shown += 1;
    });
    document.getElementById("shown-count").textContent = String(shown);
    document.getElementById("total-count").textContent = String(samples.length);
  }

  Array.prototype.forEach.call(document.querySelectorAll("button.filter"), function (button) {
    button.addEventListener("click", function () {
      var key = button.getAttribute("data-filter");
      state[key] = button.getAttribute("data-value");
      Array.prototype.forEach.call(document.querySelectorAll('button.filter[data-filter="' + key + '"]'), function (b) {
        b.classList.toggle("active", b === button);
      });
      apply();
    });
  });
  apply();
})();

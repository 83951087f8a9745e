// On-screen keyboard for touchscreen kiosks: Vietnamese letters and tone marks, and a number pad for
// numeric fields. Shown only on kiosk stations, when a text field takes focus; the page is padded so
// the keyboard never covers the field. Everything typed is normalised to NFC.
(function () {
  "use strict";
  var TONES = { "sac": "\u0301", "huyen": "\u0300", "hoi": "\u0309", "nga": "\u0303", "nang": "\u0323" };
  var TONE_MARKS = /[\u0300\u0301\u0303\u0309\u0323]/g;
  var MODIFIED = "ăâêôơưĂÂÊÔƠƯ";
  var VOWELS = "aăâeêioôơuưyAĂÂEÊIOÔƠUƯY";

  function base(ch) { return ch.normalize("NFD").replace(TONE_MARKS, "").normalize("NFC"); }
  function isVowel(ch) { return VOWELS.indexOf(base(ch)) >= 0; }

  // Where the tone goes in a word, by the usual rules: on the vowel with a hat or horn (the last one,
  // as in "ương"); else with a final consonant on the last vowel ("toán"); three vowels on the middle
  // ("ngoài"); "oa", "oe", "uy" on the second ("hoà", "thuý"); other pairs on the first ("múa").
  function tonePosition(word) {
    var start = 0, lower = word.toLowerCase();
    if (/^(qu|gi)[^\s]/.test(base(lower).slice(0, 3)) && word.length > 2 && isVowel(word[2])) start = 2;
    var first = -1, last = -1;
    for (var i = start; i < word.length; i++) {
      if (isVowel(word[i])) { if (first < 0) first = i; last = i; } else if (first >= 0) break;
    }
    if (first < 0) return -1;
    for (var j = last; j >= first; j--) if (MODIFIED.indexOf(base(word[j])) >= 0) return j;
    var cluster = base(lower.slice(first, last + 1));
    if (last < word.length - 1) return last;
    if (cluster.length >= 3) return first + 1;
    if (cluster.length === 2) return ["oa", "oe", "uy"].indexOf(cluster) >= 0 ? last : first;
    return first;
  }

  function applyTone(word, tone) {
    var at = tonePosition(word);
    if (at < 0) return word;
    var ch = word[at].normalize("NFD").replace(TONE_MARKS, "") + TONES[tone];
    return (word.slice(0, at) + ch.normalize("NFC") + word.slice(at + 1)).normalize("NFC");
  }
  window.dvcKeyboard = { applyTone: applyTone, tonePosition: tonePosition };

  if (document.body.dataset.stationKind !== "kiosk") return;

  var LETTERS = [
    ["q", "w", "e", "r", "t", "y", "u", "i", "o", "p"],
    ["a", "s", "d", "f", "g", "h", "j", "k", "l", "đ"],
    ["shift", "z", "x", "c", "v", "b", "n", "m", "back"],
    ["ă", "â", "ê", "ô", "ơ", "ư"],
    ["tone:sac", "tone:huyen", "tone:hoi", "tone:nga", "tone:nang"],
    ["123", ",", ".", "-", "/", "space", "done"]
  ];
  var NUMBERS = [["1", "2", "3"], ["4", "5", "6"], ["7", "8", "9"], ["+", "0", "back"], ["abc", "done"]];
  var NAMES = {
    vi: { shift: "⇧ Chữ hoa", back: "⌫ Xoá", space: "Dấu cách", done: "Xong", "123": "123", abc: "ABC",
          sac: "Dấu sắc", huyen: "Dấu huyền", hoi: "Dấu hỏi", nga: "Dấu ngã", nang: "Dấu nặng", label: "Bàn phím ảo" },
    en: { shift: "⇧ Shift", back: "⌫ Delete", space: "Space", done: "Done", "123": "123", abc: "ABC",
          sac: "Acute (sắc)", huyen: "Grave (huyền)", hoi: "Hook (hỏi)", nga: "Tilde (ngã)", nang: "Dot (nặng)", label: "On-screen keyboard" }
  };
  var SHOWN = { sac: "á", huyen: "à", hoi: "ả", nga: "ã", nang: "ạ" };
  var lang = document.documentElement.lang === "en" ? "en" : "vi";
  var names = NAMES[lang];
  // A named region: a landmark of its own, since it sits outside <main> (axe "region").
  var board = document.createElement("section");
  board.id = "osk";
  board.className = "osk";
  board.setAttribute("aria-label", names.label);
  board.hidden = true;
  document.body.appendChild(board);
  var field = null, shift = false, mode = "letters";
  var FIELDS = "input[type=text], input[type=search], input[type=tel], input[type=email], input:not([type]), textarea";

  function keyButton(key) {
    var button = document.createElement("button");
    button.type = "button";
    button.className = "osk-key";
    button.dataset.key = key;
    var text = key;
    if (key.indexOf("tone:") === 0) {
      var tone = key.slice(5);
      text = SHOWN[tone];
      button.setAttribute("aria-label", names[tone]);
      button.classList.add("osk-tone");
    } else if (names[key]) {
      text = names[key];
      button.classList.add("osk-wide");
    } else if (shift) {
      text = key.toUpperCase();
    }
    if (key === "space") button.classList.add("osk-space");
    button.textContent = text;
    return button;
  }

  function render() {
    board.textContent = "";
    (mode === "numbers" ? NUMBERS : LETTERS).forEach(function (row) {
      var line = document.createElement("div");
      line.className = "osk-row";
      row.forEach(function (key) {
        if (mode === "numbers" && key === "abc" && field && field.inputMode === "numeric") return;
        if (mode === "numbers" && key === "+" && field && field.inputMode !== "tel") return;
        line.appendChild(keyButton(key));
      });
      board.appendChild(line);
    });
    board.dataset.mode = mode;
  }

  function emit() {
    field.value = field.value.normalize("NFC");
    field.dispatchEvent(new Event("input", { bubbles: true }));
  }

  function insert(text) {
    var start = field.selectionStart == null ? field.value.length : field.selectionStart;
    var end = field.selectionEnd == null ? field.value.length : field.selectionEnd;
    var limit = field.maxLength > 0 ? field.maxLength : Infinity;
    if (field.value.length - (end - start) + text.length > limit) return;
    field.value = field.value.slice(0, start) + text + field.value.slice(end);
    var caret = start + text.length;
    emit();
    try { field.setSelectionRange(caret, caret); } catch (e) { /* type=email has no selection */ }
  }

  function backspace() {
    var start = field.selectionStart == null ? field.value.length : field.selectionStart;
    var end = field.selectionEnd == null ? field.value.length : field.selectionEnd;
    if (start === end && start > 0) start -= 1;
    field.value = field.value.slice(0, start) + field.value.slice(end);
    emit();
    try { field.setSelectionRange(start, start); } catch (e) { /* ignore */ }
  }

  function tone(name) {
    var caret = field.selectionStart == null ? field.value.length : field.selectionStart;
    var before = field.value.slice(0, caret);
    var match = before.match(/[^\s,.\-\/]+$/);
    if (!match) return;
    var word = applyTone(match[0], name);
    field.value = before.slice(0, before.length - match[0].length) + word + field.value.slice(caret);
    var at = before.length - match[0].length + word.length;
    emit();
    try { field.setSelectionRange(at, at); } catch (e) { /* ignore */ }
  }

  function press(key) {
    if (!field) return;
    if (key === "shift") { shift = !shift; render(); return; }
    if (key === "back") { backspace(); return; }
    if (key === "space") { insert(" "); return; }
    if (key === "done") { field.blur(); hide(); return; }
    if (key === "123") { mode = "numbers"; render(); return; }
    if (key === "abc") { mode = "letters"; render(); return; }
    if (key.indexOf("tone:") === 0) { tone(key.slice(5)); return; }
    insert(shift ? key.toUpperCase() : key);
    if (shift) { shift = false; render(); }
  }

  // A phone or small tablet has its own keyboard, and ten keys of 48 px do not fit on it.
  var smallScreen = window.matchMedia("(max-width: 599px)");

  function show(target) {
    if (smallScreen.matches) { hide(); return; }
    field = target;
    mode = (target.inputMode === "numeric" || target.inputMode === "tel") ? "numbers" : "letters";
    shift = false;
    render();
    board.hidden = false;
    document.body.style.paddingBottom = board.offsetHeight + "px";
    // Keep the field in view above the keyboard, and the form's button too when both fit.
    var visibleBottom = window.innerHeight - board.offsetHeight;
    var top = field.getBoundingClientRect().top, bottom = field.getBoundingClientRect().bottom;
    var button = field.form && field.form.querySelector("button[type=submit], button:not([type])");
    if (button) {
      var buttonBottom = button.getBoundingClientRect().bottom;
      if (buttonBottom > bottom && buttonBottom - top <= visibleBottom - 32) bottom = buttonBottom;
    }
    if (bottom > visibleBottom - 16) window.scrollBy(0, bottom - visibleBottom + 16);
    else if (top < 0) window.scrollBy(0, top - 16);
  }

  // Hiding keeps the page's padding: removing it would move the page under the finger that is
  // pressing a button (that tap takes the focus from the field and hides the keyboard).
  function hide() {
    board.hidden = true;
    field = null;
  }

  // Keys must not take focus from the field.
  board.addEventListener("pointerdown", function (event) { event.preventDefault(); });
  board.addEventListener("click", function (event) {
    var key = event.target.closest("[data-key]");
    if (key) press(key.dataset.key);
  });
  document.addEventListener("focusin", function (event) {
    var t = event.target;
    if (t.matches && t.matches(FIELDS)) {
      show(t);
    } else if (!board.contains(t)) {
      hide();
    }
  });
  // A swap that replaces the field (a new page) closes the keyboard; one beside it (the search box's live
  // results, a status that polls) leaves it open, so typing goes on.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (field && target && !target.contains(field) && document.contains(field)) return;
    hide();
    document.body.style.paddingBottom = "";
  });
  document.addEventListener("htmx:afterSettle", function () {
    // The field may still have the focus after a swap beside it; then the keyboard goes on with it.
    var active = document.activeElement;
    if (!field && active && active.matches && active.matches(FIELDS) && !smallScreen.matches) show(active);
  });
})();

// The tracking page: asks GET /v1/pieces/{barcode} and draws the answer. Text goes in through
// textContent only, so nothing a feed carried can run as markup.
"use strict";

const $ = (id) => document.getElementById(id);

function show(message, isError) {
  const el = $("message");
  el.textContent = message;
  el.className = isError ? "error" : "";
}

function when(rfc3339) {
  const d = new Date(rfc3339);
  if (isNaN(d)) return rfc3339;
  return d.toISOString().replace("T", " ").replace(/:\d\d\.\d+Z$|:\d\dZ$/, " UTC");
}

function words(status) {
  return status.toLowerCase().replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
}

function place(event) {
  const parts = [event.facility_name, [event.facility_city, event.facility_state].filter(Boolean).join(", ")]
    .filter(Boolean);
  const where = parts.join(" · ");
  return where ? `${where} (${event.facility_zip})` : event.facility_zip;
}

// Scans not of the piece itself: inherited from its container, or made by the system.
const SCAN_TYPES = { AA: "assumed: its container was scanned", L: "logical: made by the system" };

function draw(piece) {
  $("status").textContent = words(piece.status) + (piece.logical ? " (logical delivery event)" : "");
  $("piece-barcode").textContent = piece.barcode;
  $("piece-class").textContent = piece.class;
  $("status-time").textContent = when(piece.status_time);
  $("routing-zip").textContent = piece.routing_zip || "—";
  $("expected").textContent = piece.expected_delivery
    ? `${piece.expected_delivery} (estimate from a stop-the-clock scan)`
    : "—";
  const list = $("events");
  list.replaceChildren();
  for (const event of piece.events) {
    const item = document.createElement("li");
    item.className = "event";
    const time = document.createElement("time");
    time.dateTime = event.time;
    time.textContent = when(event.time);
    const what = document.createElement("strong");
    what.textContent = event.description || `Event ${event.code}`;
    const code = document.createElement("span");
    code.className = "code";
    code.textContent = `${event.code} · ${words(event.status)}`;
    const where = document.createElement("span");
    where.className = "where";
    where.textContent = place(event);
    item.append(time, what, code, where);
    const kind = SCAN_TYPES[event.scan_type];
    if (kind) {
      item.classList.add(event.scan_type === "L" ? "logical" : "assumed");
      const note = document.createElement("span");
      note.className = "scan-type";
      note.textContent = kind;
      item.append(note);
    }
    list.append(item);
  }
  $("result").hidden = false;
}

async function track(text) {
  const barcode = text.replace(/\s+/g, "");
  $("result").hidden = true;
  if (!barcode) {
    show("Enter a barcode.", true);
    return;
  }
  show("Looking it up…", false);
  const headers = {};
  const token = $("token").value.trim();
  if (token) headers["Authorization"] = `Bearer ${token}`;
  try {
    const response = await fetch(`/v1/pieces/${encodeURIComponent(barcode)}`, { headers });
    const body = await response.json();
    if (response.ok) {
      show("", false);
      draw(body);
    } else if (response.status === 401) {
      $("access").open = true;
      show("This server needs an access token.", true);
    } else {
      show(body.error ? body.error.message : `Error ${response.status}`, true);
    }
  } catch (e) {
    show(`The server did not answer (${e.message}).`, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = sessionStorage.getItem("imbtrack-token") || "";
  $("token").addEventListener("change", () => sessionStorage.setItem("imbtrack-token", $("token").value.trim()));
  $("track").addEventListener("submit", (e) => {
    e.preventDefault();
    const barcode = $("barcode").value;
    history.replaceState(null, "", `?barcode=${encodeURIComponent(barcode.replace(/\s+/g, ""))}`);
    track(barcode);
  });
  const asked = new URLSearchParams(location.search).get("barcode");
  if (asked) {
    $("barcode").value = asked;
    track(asked);
  }
});

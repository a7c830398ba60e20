/*
 * Progressive enhancement for the newsletter signup form on another site
 * (docs/embedding.md). Without this script the form is a plain cross-origin
 * POST to /subscribe that lands on the site's thank-you page. With it, the form
 * posts JSON to /api/v1/subscriptions (CORS, for NEWSLETTER_ALLOWED_ORIGINS only)
 * and shows the answer in place, in the form's live region.
 *
 * No dependencies, no cookies (credentials: "omit"), nothing stored. When the
 * API cannot be reached (offline, CORS not configured) the form is sent the
 * plain way instead, so a signup is never lost to the script.
 */
(function () {
  "use strict";

  var TEXTS = {
    da: {
      sending: "Sender …",
      accepted: "Tak! Tjek din indbakke: vi har sendt dig en mail. Tryk på knappen i mailen for at bekræfte din tilmelding.",
      email: "Skriv en gyldig e-mailadresse, fx navn@eksempel.dk.",
      name: "Navnet er for langt eller indeholder tegn, vi ikke kan bruge.",
      busy: "Der er sendt mange tilmeldinger herfra. Vent et par minutter, og prøv igen.",
      failed: "Tilmeldingen gik ikke igennem. Prøv igen om lidt."
    },
    en: {
      sending: "Sending …",
      accepted: "Thank you! Check your inbox: we have sent you a mail. Press the button in it to confirm your subscription.",
      email: "Enter a valid e-mail address, e.g. name@example.com.",
      name: "The name is too long or contains characters we cannot use.",
      busy: "Many signups came from here. Wait a few minutes and try again.",
      failed: "The signup did not go through. Please try again shortly."
    }
  };

  /** The form's language: its lang attribute, the page's, or Danish. */
  function languageOf(form) {
    var lang = (form.closest("[lang]") || document.documentElement).getAttribute("lang") || "da";
    return TEXTS[lang.slice(0, 2)] ? lang.slice(0, 2) : "da";
  }

  /** A text for this form: a data-text-KEY attribute overrides the built-in one. */
  function text(form, key) {
    return form.getAttribute("data-text-" + key) || TEXTS[languageOf(form)][key];
  }

  /** The live region that announces the result (made if the markup has none). */
  function statusOf(form) {
    var status = form.querySelector("[role=status]");
    if (!status) {
      status = document.createElement("p");
      status.setAttribute("role", "status");
      form.appendChild(status);
    }
    return status;
  }

  /** Remove an earlier error from a field. */
  function clearError(field) {
    var error = document.getElementById(field.id + "-error");
    if (error) {
      error.parentNode.removeChild(error);
    }
    field.removeAttribute("aria-invalid");
    var described = (field.getAttribute("aria-describedby") || "")
      .split(" ")
      .filter(function (id) { return id && id !== field.id + "-error"; });
    if (described.length) {
      field.setAttribute("aria-describedby", described.join(" "));
    } else {
      field.removeAttribute("aria-describedby");
    }
  }

  /** Name the error in text beside the field, tie it with aria-describedby, focus it. */
  function showError(field, message) {
    var error = document.createElement("p");
    error.id = field.id + "-error";
    error.className = "newsletter-signup__error";
    error.textContent = message;
    field.parentNode.insertBefore(error, field.nextSibling);
    field.setAttribute("aria-invalid", "true");
    var described = field.getAttribute("aria-describedby");
    field.setAttribute("aria-describedby", (described ? described + " " : "") + error.id);
    field.focus();
  }

  /** The JSON the API takes, read from the form's own fields. */
  function payloadOf(form) {
    var data = new FormData(form);
    var body = { email: String(data.get("email") || ""), locale: languageOf(form) };
    if (data.get("name")) {
      body.name = String(data.get("name"));
    }
    var lists = data.getAll("list").map(String).filter(Boolean);
    if (lists.length) {
      body.lists = lists;
    }
    return body;
  }

  /** Send one form through the API; fall back to the plain POST when that fails. */
  function send(form, event) {
    var website = form.querySelector("[name=website]");
    if (website && website.value) {
      return; // the honeypot is filled: let the server ignore it the usual way
    }
    event.preventDefault();
    // Not button.disabled: disabling the focused button would drop keyboard focus
    // to the top of the page. A second press while sending is simply ignored.
    if (form.hasAttribute("data-sending")) {
      return;
    }
    form.setAttribute("data-sending", "");
    var status = statusOf(form);
    Array.prototype.forEach.call(form.querySelectorAll("input[id]"), clearError);
    status.textContent = text(form, "sending");
    window.fetch(form.getAttribute("data-newsletter-api"), {
      method: "POST",
      mode: "cors",
      credentials: "omit",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(payloadOf(form))
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        form.removeAttribute("data-sending");
        if (response.status === 202) {
          form.reset();
          status.textContent = text(form, "accepted");
          return;
        }
        status.textContent = "";
        var field = body.field && form.querySelector("[name=" + body.field + "]");
        if (response.status === 422 && field && field.id && TEXTS.da[body.field]) {
          showError(field, text(form, body.field));
        } else {
          status.textContent = text(form, response.status === 429 ? "busy" : "failed");
        }
      });
    }).catch(function () {
      // Network error or CORS refused: the plain form still works.
      form.removeAttribute("data-sending");
      status.textContent = "";
      form.submit();
    });
  }

  /** Take over one form's submit, when this browser can send JSON. */
  function enhance(form) {
    if (!form.getAttribute("data-newsletter-api") || !window.fetch || !window.FormData) {
      return;
    }
    statusOf(form);
    form.addEventListener("submit", function (event) { send(form, event); });
  }

  Array.prototype.forEach.call(document.querySelectorAll("form[data-newsletter-api]"), enhance);
})();

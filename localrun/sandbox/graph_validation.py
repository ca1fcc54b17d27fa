"""Validation of ``POST /{version}/{phone_number_id}/messages`` bodies (shapes from the Cloud API OpenAPI
spec, v23.0); a problem is raised as the Graph error Meta answers (code 100, naming the field)."""

from __future__ import annotations

import re
from typing import Any

from localrun.sandbox.graph_errors import GraphError

MESSAGE_TYPES = ("text", "template", "image", "document", "interactive", "reaction")
INTERACTIVE_TYPES = (
    "button",
    "call_permission_request",
    "catalog_message",
    "list",
    "product",
    "product_list",
    "flow",
    "cta_url",
)
MAX_TEXT_BODY = 4096
MAX_CAPTION = 1024

_PHONE = re.compile(r"^\+?(\d{8,15})$")


def _normalize_address(value: str) -> str:
    """A phone number as digits (leading + dropped); anything else (a business-scoped user id) unchanged."""
    match = _PHONE.match(value)
    return match.group(1) if match else value


def _invalid(field: str, problem: str) -> GraphError:
    """Error for an invalid request parameter (Graph code 100), naming the field."""
    if problem == "is required":
        text = f"(#100) The parameter {field} is required."
    else:
        text = f"(#100) Param {field} {problem}."
    return GraphError(400, 100, text, details=text.removeprefix("(#100) "))


def _require_object(parent: dict[str, Any], key: str, field: str) -> dict[str, Any]:
    value = parent.get(key)
    if value is None:
        raise _invalid(field, "is required")
    if not isinstance(value, dict):
        raise _invalid(field, "must be a JSON object")
    return value


def _require_str(parent: dict[str, Any], key: str, field: str, *, max_len: int | None = None) -> str:
    value = parent.get(key)
    if value is None:
        raise _invalid(field, "is required")
    if not isinstance(value, str):
        raise _invalid(field, "must be a string")
    if not value:
        raise _invalid(field, "must not be empty")
    if max_len is not None and len(value) > max_len:
        raise _invalid(field, f"must be at most {max_len} characters long")
    return value


def _optional_str(parent: dict[str, Any], key: str, field: str, *, max_len: int | None = None) -> None:
    if key in parent:
        value = parent[key]
        if not isinstance(value, str):
            raise _invalid(field, "must be a string")
        if max_len is not None and len(value) > max_len:
            raise _invalid(field, f"must be at most {max_len} characters long")


def _no_unknown_keys(obj: dict[str, Any], allowed: set[str], field: str) -> None:
    for key in obj:
        if key not in allowed:
            raise _invalid(f"{field}['{key}']", "is not a valid parameter")


def _validate_text(text: dict[str, Any]) -> None:
    _no_unknown_keys(text, {"body", "preview_url"}, "text")
    _require_str(text, "body", "text['body']", max_len=MAX_TEXT_BODY)
    if "preview_url" in text and not isinstance(text["preview_url"], bool):
        raise _invalid("text['preview_url']", "must be a boolean")


def _validate_media(media: dict[str, Any], kind: str) -> None:
    allowed = {"id", "link", "caption"} | ({"filename"} if kind == "document" else set())
    _no_unknown_keys(media, allowed, kind)
    has_id, has_link = "id" in media, "link" in media
    if has_id and has_link:
        raise _invalid(f"{kind}['link']", f"must not be used together with {kind}['id']")
    if not has_id and not has_link:
        raise _invalid(f"{kind}['link'] or {kind}['id']", "is required")
    if has_id:
        _require_str(media, "id", f"{kind}['id']")
    else:
        link = _require_str(media, "link", f"{kind}['link']")
        if not link.startswith(("http://", "https://")):
            raise _invalid(f"{kind}['link']", "must be an http(s) URL")
    _optional_str(media, "caption", f"{kind}['caption']", max_len=MAX_CAPTION)
    _optional_str(media, "filename", f"{kind}['filename']")


def _validate_template(template: dict[str, Any]) -> None:
    _require_str(template, "name", "template['name']", max_len=512)
    language = _require_object(template, "language", "template['language']")
    _require_str(language, "code", "template['language']['code']")
    if "policy" in language and language["policy"] != "deterministic":
        raise _invalid("template['language']['policy']", "must be 'deterministic'")
    if "components" not in template:
        return
    components = template["components"]
    if not isinstance(components, list):
        raise _invalid("template['components']", "must be an array")
    for i, component in enumerate(components):
        field = f"template['components'][{i}]"
        if not isinstance(component, dict):
            raise _invalid(field, "must be a JSON object")
        kind = _require_str(component, "type", f"{field}['type']")
        if "parameters" in component and not isinstance(component["parameters"], list):
            raise _invalid(f"{field}['parameters']", "must be an array")
        if kind == "button":
            _require_str(component, "sub_type", f"{field}['sub_type']")
            index = component.get("index")
            if index is None:
                raise _invalid(f"{field}['index']", "is required")
            if isinstance(index, bool) or not isinstance(index, (int, str)):
                raise _invalid(f"{field}['index']", "must be a number or a string")


def _validate_interactive(interactive: dict[str, Any]) -> None:
    kind = _require_str(interactive, "type", "interactive['type']")
    if kind not in INTERACTIVE_TYPES:
        raise _invalid("interactive['type']", f"must be one of {', '.join(INTERACTIVE_TYPES)}")
    action = _require_object(interactive, "action", "interactive['action']")
    if "header" in interactive:
        header = _require_object(interactive, "header", "interactive['header']")
        _require_str(header, "type", "interactive['header']['type']")
        _optional_str(header, "text", "interactive['header']['text']", max_len=60)
    if kind != "product" or "body" in interactive:
        body = _require_object(interactive, "body", "interactive['body']")
        _require_str(body, "text", "interactive['body']['text']", max_len=1024)
    if "footer" in interactive:
        footer = _require_object(interactive, "footer", "interactive['footer']")
        _require_str(footer, "text", "interactive['footer']['text']", max_len=60)
    if kind == "button":
        buttons = action.get("buttons")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
            raise _invalid("interactive['action']['buttons']", "must be an array of 1 to 3 buttons")
        for i, button in enumerate(buttons):
            field = f"interactive['action']['buttons'][{i}]"
            if not isinstance(button, dict) or button.get("type") != "reply":
                raise _invalid(f"{field}['type']", "must be 'reply'")
            reply = _require_object(button, "reply", f"{field}['reply']")
            _require_str(reply, "id", f"{field}['reply']['id']", max_len=256)
            _require_str(reply, "title", f"{field}['reply']['title']", max_len=20)
    elif kind == "list":
        _require_str(action, "button", "interactive['action']['button']", max_len=20)
        sections = action.get("sections")
        if not isinstance(sections, list) or not 1 <= len(sections) <= 10:
            raise _invalid("interactive['action']['sections']", "must be an array of 1 to 10 sections")


def _validate_reaction(reaction: dict[str, Any]) -> None:
    _require_str(reaction, "message_id", "reaction['message_id']")
    emoji = reaction.get("emoji")
    if emoji is None:
        raise _invalid("reaction['emoji']", "is required")
    if not isinstance(emoji, str):  # "" removes a reaction, so empty is allowed
        raise _invalid("reaction['emoji']", "must be a string")


_TYPE_VALIDATORS = {
    "text": _validate_text,
    "template": _validate_template,
    "image": lambda obj: _validate_media(obj, "image"),
    "document": lambda obj: _validate_media(obj, "document"),
    "interactive": _validate_interactive,
    "reaction": _validate_reaction,
}


def _validate_read_receipt(body: dict[str, Any]) -> None:
    if body["status"] != "read":
        raise _invalid("status", "must be 'read'")
    _require_str(body, "message_id", "message_id")
    if "typing_indicator" in body:
        indicator = _require_object(body, "typing_indicator", "typing_indicator")
        if indicator.get("type") != "text":
            raise _invalid("typing_indicator['type']", "must be 'text'")


def _validate_message(body: Any) -> tuple[str, str, str]:
    """Check a /messages request body; return (recorded recipient, input as given, type).

    For a "mark as read" request (``status: read``) the type is ``"read"`` and both addresses are empty.
    """
    if not isinstance(body, dict):
        raise _invalid("body", "must be a JSON object")
    if body.get("messaging_product") is None:
        raise _invalid("messaging_product", "is required")
    if body["messaging_product"] != "whatsapp":
        raise _invalid("messaging_product", "must be 'whatsapp'")
    if "status" in body:
        _validate_read_receipt(body)
        return "", "", "read"
    if "recipient_type" in body and body["recipient_type"] != "individual":
        raise _invalid("recipient_type", "must be 'individual'")
    if body.get("to") is not None:
        given = body["to"]
        if not isinstance(given, str):
            raise _invalid("to", "must be a string")
        match = _PHONE.match(given)
        if not match:
            raise _invalid("to", "must be a phone number of 8 to 15 digits, optionally with a leading +")
        address = match.group(1)
    elif body.get("recipient") is not None:
        given = body["recipient"]
        if not isinstance(given, str) or not given or len(given) > 128 or any(c.isspace() for c in given):
            raise _invalid("recipient", "must be a business-scoped user id string")
        address = given
    else:
        raise _invalid("to", "is required")
    message_type = body.get("type", "text")
    if not isinstance(message_type, str) or message_type not in MESSAGE_TYPES:
        raise _invalid("type", f"must be one of {', '.join(MESSAGE_TYPES)}")
    if "biz_opaque_callback_data" in body:
        _optional_str(body, "biz_opaque_callback_data", "biz_opaque_callback_data", max_len=512)
    if "context" in body:
        context = _require_object(body, "context", "context")
        _require_str(context, "message_id", "context['message_id']")
    _TYPE_VALIDATORS[message_type](_require_object(body, message_type, message_type))
    return address, given, message_type

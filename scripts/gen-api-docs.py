#!/usr/bin/env python3
"""Writes docs/api.md, the API reference, from Herald's OpenAPI document.

Usage: scripts/gen-api-docs.py OPENAPI_JSON [OUTPUT]   (OUTPUT: standard output by default)

The document is the one `herald serve` answers at /api/v1/openapi.json; scripts/check-docs
fetches it from the binary under test and fails when docs/api.md differs from this script's
output, so the reference cannot go stale. Python 3 standard library only.

Every operation gets its summary, parameters, request body fields and responses, each response
with the problem codes the document names for it (codes in backticks in the response's
description, or "NNN `code`" in the operation's summary). Then every schema, with its fields.
The output depends only on the document: operations and fields are ordered here, not by the
order of the JSON.
"""

import json
import re
import sys

METHODS = ["get", "post", "put", "patch", "delete"]
CODE = re.compile(r"`([a-z][a-z0-9_]*)`")


def slug(heading):
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def oneline(text):
    """A description on one line, safe in a table cell."""
    if not text:
        return ""
    text = " ".join(text.split())
    return text.replace("|", "\\|")


class Doc:
    def __init__(self, spec):
        self.spec = spec
        self.schemas = spec.get("components", {}).get("schemas", {})

    def ref_name(self, ref):
        prefix = "#/components/schemas/"
        if not ref.startswith(prefix):
            raise SystemExit(f"unsupported $ref: {ref}")
        name = ref[len(prefix):]
        if name not in self.schemas:
            raise SystemExit(f"$ref to a schema the document lacks: {ref}")
        return name

    def resolve(self, schema):
        """The schema a $ref (or an allOf of one $ref) points at, with its name."""
        if "$ref" in schema:
            name = self.ref_name(schema["$ref"])
            return name, self.schemas[name]
        if list(schema.get("allOf", [])) and len(schema["allOf"]) == 1 and "$ref" in schema["allOf"][0]:
            name = self.ref_name(schema["allOf"][0]["$ref"])
            return name, self.schemas[name]
        return None, schema

    def type_of(self, schema):
        """A schema's type in words, with links to the named schemas."""
        if schema is None:
            return ""
        if "$ref" in schema:
            name = self.ref_name(schema["$ref"])
            return f"[{name}](#{slug(name)})"
        for key, joiner in (("allOf", " and "), ("oneOf", " or "), ("anyOf", " or ")):
            if key in schema:
                parts = [self.type_of(s) for s in schema[key]]
                return joiner.join(p for p in parts if p)
        if "enum" in schema:
            values = ", ".join(f"`{v}`" if v is not None else "null" for v in schema["enum"])
            return f"one of {values}"
        types = schema.get("type")
        if isinstance(types, list):
            names = [self.type_of({**schema, "type": t}) for t in types if t != "null"]
            words = " or ".join(names) if names else "null"
            return f"{words} or null" if "null" in types else words
        if types == "array":
            return f"array of {self.type_of(schema.get('items'))}".strip()
        if types == "object" or (types is None and "additionalProperties" in schema):
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                return f"map of string to {self.type_of(extra)}"
            return "object"
        if types is None:
            return "any"
        fmt = schema.get("format")
        return f"{types} ({fmt})" if fmt else types

    def fields(self, schema):
        """Rows of (field, type, required, description) for an object schema."""
        name, target = self.resolve(schema)
        props = target.get("properties", {})
        required = set(target.get("required", []))
        rows = []
        for field in sorted(props):
            prop = props[field]
            desc = prop.get("description", "")
            if not desc and "$ref" not in prop:
                desc = ""
            notes = []
            if "default" in prop:
                notes.append(f"Default `{json.dumps(prop['default'])}`.")
            if prop.get("writeOnly"):
                notes.append("Write-only.")
            if prop.get("readOnly"):
                notes.append("Read-only.")
            text = " ".join(x for x in [oneline(desc)] + notes if x)
            rows.append((f"`{field}`", self.type_of(prop), "yes" if field in required else "", text))
        return rows


def table(out, header, rows):
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "---|" * len(header))
    for row in rows:
        out.append("| " + " | ".join(cell if cell else " " for cell in row) + " |")
    out.append("")


def link_schemas(text, schemas):
    """Rustdoc-style [`Name`] in a summary becomes a link to the schema."""
    def repl(m):
        name = m.group(1)
        return f"[`{name}`](#{slug(name)})" if name in schemas else m.group(0)
    return re.sub(r"\[`(\w+)`\](?!\()", repl, text)


def operations(spec):
    for path, item in spec.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def problem_codes(status, response, summary):
    codes = CODE.findall(response.get("description") or "")
    codes += re.findall(rf"\b{status}:? `([a-z][a-z0-9_]*)`", summary or "")
    seen = []
    for code in codes:
        if code not in seen:
            seen.append(code)
    return ", ".join(f"`{c}`" for c in seen)


def render(spec):
    doc = Doc(spec)
    info = spec.get("info", {})
    out = []
    out.append("# API reference")
    out.append("")
    out.append("<!-- Generated by scripts/gen-api-docs.py from GET /api/v1/openapi.json. Do not edit:")
    out.append("     scripts/check-docs regenerates it from the binary under test and fails when it differs. -->")
    out.append("")
    out.append(
        f"{info.get('title', 'API')} {info.get('version', '')}, from the OpenAPI {spec.get('openapi', '')} "
        "document that `herald serve` answers at `GET /api/v1/openapi.json`. "
        "[The README's API section](../README.md#api) tells the story; this page lists every operation."
    )
    out.append("")
    if info.get("description"):
        out.append(oneline(info["description"]).replace("\\|", "|"))
        out.append("")

    schemes = spec.get("components", {}).get("securitySchemes", {})
    if schemes:
        out.append("## Authentication")
        out.append("")
        rows = []
        for name in sorted(schemes):
            s = schemes[name]
            if s.get("type") == "http":
                how = f"`Authorization: {s.get('scheme', '').capitalize()} {s.get('bearerFormat', '…')}`"
            elif s.get("type") == "apiKey":
                how = f"{s.get('in')} `{s.get('name')}`"
            else:
                how = s.get("type", "")
            rows.append((f"`{name}`", how, oneline(s.get("description", ""))))
        table(out, ["Scheme", "How", "Notes"], rows)

    if "Problem" in doc.schemas:
        out.append("## Errors")
        out.append("")
        out.append(
            "Every error answers `application/problem+json`, a [Problem](#problem). The problem codes below "
            "are those the document names for a response; `code` may take others (see the README)."
        )
        out.append("")

    tags = [t["name"] for t in spec.get("tags", [])]
    tag_desc = {t["name"]: t.get("description", "") for t in spec.get("tags", [])}
    by_tag = {}
    for path, method, op in operations(spec):
        tag = (op.get("tags") or ["other"])[0]
        if tag not in tags:
            tags.append(tag)
        by_tag.setdefault(tag, []).append((path, method, op))

    out.append("## Operations")
    out.append("")
    rows = []
    for tag in tags:
        for path, method, op in by_tag.get(tag, []):
            heading = f"{method.upper()} {path}"
            first = oneline(op.get("summary", "")).split(". ")[0].rstrip(".")
            rows.append((tag, f"[`{heading}`](#{slug(heading)})", link_schemas(first, doc.schemas)))
    table(out, ["Tag", "Operation", "Summary"], rows)

    for tag in tags:
        if tag not in by_tag:
            continue
        out.append(f"## {tag}")
        out.append("")
        if tag_desc.get(tag):
            out.append(oneline(tag_desc[tag]) + ".")
            out.append("")
        for path, method, op in by_tag[tag]:
            out.append(f"### {method.upper()} {path}")
            out.append("")
            summary = link_schemas(oneline(op.get("summary", "")).replace("\\|", "|"), doc.schemas)
            if summary:
                out.append(summary)
                out.append("")
            if op.get("description"):
                out.append(link_schemas(oneline(op["description"]).replace("\\|", "|"), doc.schemas))
                out.append("")
            out.append(f"Operation ID: `{op.get('operationId', '')}`.")
            out.append("")

            params = op.get("parameters", [])
            if params:
                out.append("**Parameters**")
                out.append("")
                table(out, ["Name", "In", "Type", "Required", "Description"], [
                    (f"`{p['name']}`", p.get("in", ""), doc.type_of(p.get("schema")),
                     "yes" if p.get("required") else "", oneline(p.get("description", "")))
                    for p in params
                ])

            body = op.get("requestBody")
            if body:
                content = body.get("content", {})
                kinds = []
                for media in content:
                    kinds.append(f"`{media}` ({doc.type_of(content[media].get('schema'))})")
                required = "required" if body.get("required") else "optional"
                out.append(f"**Request body** ({required}): " + "; ".join(kinds) + ".")
                out.append("")
                if oneline(body.get("description", "")):
                    out.append(oneline(body["description"]))
                    out.append("")
                for media in content:
                    schema = content[media].get("schema", {})
                    name, target = doc.resolve(schema)
                    if target.get("properties"):
                        if len(content) > 1:
                            out.append(f"Fields of `{media}`:")
                            out.append("")
                        table(out, ["Field", "Type", "Required", "Description"], doc.fields(schema))

            out.append("**Responses**")
            out.append("")
            rows = []
            for status in sorted(op.get("responses", {})):
                response = op["responses"][status]
                content = response.get("content", {})
                media = "; ".join(f"`{m}` {doc.type_of(content[m].get('schema'))}".strip() for m in content)
                headers = ", ".join(f"`{h}`" for h in sorted(response.get("headers", {})))
                rows.append((status, media, headers, oneline(response.get("description", "")),
                             problem_codes(status, response, op.get("summary", ""))))
            table(out, ["Status", "Body", "Headers", "Description", "Problem codes"], rows)

    out.append("## Schemas")
    out.append("")
    for name in sorted(doc.schemas):
        schema = doc.schemas[name]
        out.append(f"### {name}")
        out.append("")
        if schema.get("description"):
            out.append(link_schemas(oneline(schema["description"]).replace("\\|", "|"), doc.schemas))
            out.append("")
        if schema.get("properties"):
            table(out, ["Field", "Type", "Required", "Description"], doc.fields(schema))
        else:
            out.append(f"Type: {doc.type_of({k: v for k, v in schema.items() if k != 'description'})}.")
            out.append("")
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    text = render(spec)
    if len(argv) == 3:
        with open(argv[2], "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""The documentation matches the code: configuration reference, close codes, error codes."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.config import reference_markdown
from gateway.protocol import CloseCode, ErrorCode

ROOT = Path(__file__).resolve().parents[1]


def test_docs_configuration_reference_is_generated_from_code() -> None:
    text = (ROOT / "docs" / "OPERATIONS.md").read_text()
    embedded = text.split("<!-- reference:start -->\n", 1)[1].split("<!-- reference:end -->", 1)[0]
    assert embedded == reference_markdown(), "regenerate with: gateway check-config --reference"


def test_docs_every_close_code_documented() -> None:
    for document in ("docs/PROTOCOL.md", "README.md"):
        text = (ROOT / document).read_text()
        for code in CloseCode:
            assert re.search(rf"^\| {int(code)} \|", text, re.MULTILINE), (document, code)


def test_docs_every_error_code_documented() -> None:
    text = (ROOT / "docs" / "PROTOCOL.md").read_text()
    table = text.split("## 6. Error codes", 1)[1]
    for code in ErrorCode:
        assert f"`{code.value}`" in table, code

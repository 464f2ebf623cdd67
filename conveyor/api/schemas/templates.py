"""Template wire schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

# One template part: a Jinja2 template, at most 256 KiB of source.
Part = Annotated[str, Field(max_length=262_144)]
_CHANNEL = "the channel; a template keeps the one it was created with (409 otherwise)"


class EmailTemplatePut(BaseModel):
    """An email template version: `subject`, and `text` and/or `html`.

    Each part is a Jinja2 template of at most 262,144 characters, rendered in a
    sandbox with strict undefined; one that does not compile is a 422
    `invalid_template` naming the field.
    """

    model_config = ConfigDict(extra="forbid")

    channel: Literal["email"] = Field(description=_CHANNEL)
    subject: Part = Field(min_length=1, description="rendered as plain text on one line")
    text: Part | None = Field(
        None, description="the plain-text body (not escaped); `text`, `html` or both are required"
    )
    html: Part | None = Field(
        None, description="the HTML body; values are HTML-escaped (`|safe` for markup)"
    )

    @model_validator(mode="after")
    def _a_body(self) -> EmailTemplatePut:
        if self.text is None and self.html is None:
            raise PydanticCustomError("template_body_missing", "give `text`, `html`, or both")
        return self


class PushTemplatePut(BaseModel):
    """A push template version: `title`, `body` and `data`.

    Each part is a Jinja2 template of at most 262,144 characters, rendered in a
    sandbox with strict undefined; one that does not compile is a 422
    `invalid_template` naming the field.
    """

    model_config = ConfigDict(extra="forbid")

    channel: Literal["push"] = Field(description=_CHANNEL)
    title: Part | None = Field(None, description="rendered as plain text on one line")
    body: Part = Field(min_length=1, description="the notification text (not escaped)")
    data: dict[str, Any] = Field(
        default_factory=dict, description="a JSON object sent along; its strings are templates"
    )


TemplatePut = Annotated[EmailTemplatePut | PushTemplatePut, Field(discriminator="channel")]


class Template(BaseModel):
    """A template with its current version's content."""

    id: str = Field(description="the template's id (a UUID)")
    name: str = Field(
        description="its name, unique among the tenant's live templates: a slug (lowercase "
        "letters, digits, `-`, `_` and `.`, starting with a letter or digit), at most 100 "
        "characters"
    )
    channel: Literal["email", "push"] = Field(description="what it renders")
    version: int = Field(description="the current version number (1, 2, ...)")
    version_id: str = Field(description="id of the current version; sends record the one used")
    content: dict[str, Any] = Field(
        description="email: `subject`, `text`, `html`; push: `title`, `body`, `data`"
    )
    created_at: datetime = Field(description="when it was created (RFC 3339, UTC)")
    updated_at: datetime = Field(description="when its last version was made (RFC 3339, UTC)")


class TemplateVersion(BaseModel):
    """One immutable version of a template."""

    id: str = Field(description="the version's id: what a message's `template_version_id` names")
    template_id: str = Field(description="the template it is a version of")
    name: str = Field(description="the template's name")
    channel: Literal["email", "push"] = Field(description="what it renders")
    version: int = Field(description="its number: 1 for the first, then 2, 3, ...")
    content: dict[str, Any] = Field(
        description="email: `subject`, `text`, `html`; push: `title`, `body`, `data`"
    )
    created_at: datetime = Field(description="when it was made (RFC 3339, UTC)")

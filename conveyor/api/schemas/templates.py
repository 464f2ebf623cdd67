"""Template wire schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# One template part: a Jinja2 template, at most 256 KiB of source.
Part = Annotated[str, Field(max_length=262_144)]


class EmailTemplatePut(BaseModel):
    """An email template version: `subject`, and `text` and/or `html`."""

    model_config = ConfigDict(extra="forbid")

    channel: Literal["email"]
    subject: Part = Field(min_length=1, description="rendered as plain text on one line")
    text: Part | None = Field(None, description="the plain-text body (not escaped)")
    html: Part | None = Field(None, description="the HTML body; values are HTML-escaped")

    @model_validator(mode="after")
    def _a_body(self) -> EmailTemplatePut:
        if self.text is None and self.html is None:
            raise ValueError("give `text`, `html`, or both")
        return self


class PushTemplatePut(BaseModel):
    """A push template version: `title`, `body` and `data`."""

    model_config = ConfigDict(extra="forbid")

    channel: Literal["push"]
    title: Part | None = Field(None, description="rendered as plain text on one line")
    body: Part = Field(min_length=1, description="the notification text (not escaped)")
    data: dict[str, Any] = Field(
        default_factory=dict, description="a JSON object sent along; its strings are templates"
    )


TemplatePut = Annotated[EmailTemplatePut | PushTemplatePut, Field(discriminator="channel")]


class Template(BaseModel):
    """A template with its current version's content."""

    id: str
    name: str
    channel: Literal["email", "push"]
    version: int = Field(description="the current version number (1, 2, ...)")
    version_id: str = Field(description="id of the current version; sends record the one used")
    content: dict[str, Any] = Field(
        description="email: `subject`, `text`, `html`; push: `title`, `body`, `data`"
    )
    created_at: datetime
    updated_at: datetime


class TemplateVersion(BaseModel):
    """One immutable version of a template."""

    id: str
    template_id: str
    name: str
    channel: Literal["email", "push"]
    version: int
    content: dict[str, Any]
    created_at: datetime

"""RFC 9457 problem details, the body of every error response."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ProblemDetail(BaseModel):
    """An error, as ``application/problem+json``."""

    type: str = Field(
        description="URI naming the problem type", examples=["urn:conveyor:problem:run_not_found"]
    )
    title: str = Field(description="short summary of the HTTP status", examples=["Not Found"])
    status: int = Field(description="the HTTP status code", examples=[404])
    detail: str = Field(
        description="what went wrong, for people", examples=["run 0193... not found"]
    )
    code: str = Field(description="stable machine-readable error code", examples=["run_not_found"])


class ErrorItem(BaseModel):
    """One problem found in the input."""

    loc: list[str | int] = Field(description="where: path of keys and indexes into the input")
    msg: str = Field(description="what is wrong")
    type: str = Field(description="stable kind of problem")


class ValidationProblem(ProblemDetail):
    """A validation error, with every problem found."""

    errors: list[ErrorItem] = Field(description="every problem found, each with its place")

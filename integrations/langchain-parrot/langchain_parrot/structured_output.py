"""`ChatParrot.with_structured_output`: answers parsed into a pydantic model, TypedDict or dict.

Methods, as in langchain-openai (the default is "json_schema"):
- "json_schema": `response_format={"type": "json_schema", ...}`; the server constrains the
  answer to the schema with a grammar, so it always parses (unless `max_tokens` cuts it).
- "function_calling": the schema bound as the one tool and forced by `tool_choice` (also
  grammar-enforced); the tool call's arguments are the output.
- "json_mode": `response_format={"type": "json_object"}`: any JSON object; the prompt must
  say which keys (the schema, if given, only validates).
A pydantic schema gives instances of it, anything else dicts; `include_raw=True` gives
`{"raw": AIMessage, "parsed": ..., "parsing_error": ...}` and never raises on parsing.
"""
from __future__ import annotations

from functools import partial
from operator import itemgetter
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import (JsonOutputKeyToolsParser,
                                                        PydanticToolsParser)
from langchain_core.runnables import Runnable, RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import (convert_to_openai_function,
                                                   convert_to_openai_tool)
from langchain_core.utils.pydantic import is_basemodel_subclass

Method = Literal["json_schema", "function_calling", "json_mode"]
SchemaLike = dict[str, Any] | type


def structured_output(model: BaseChatModel, schema: SchemaLike | None, method: Method,
                      include_raw: bool, strict: bool | None) -> Runnable:
    """`model` bound for `method`, piped into the parser of its answer."""
    if schema is None and method != "json_mode":
        raise ValueError(f"method={method!r} needs a schema (only 'json_mode' works without)")
    trace = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
    if method == "json_schema":
        llm = model.bind(response_format=json_schema_format(schema, strict),
                         ls_structured_output_format=trace)
        parser = _json_schema_parser(schema)
    elif method == "function_calling":
        tool = convert_to_openai_tool(schema, strict=strict)
        trace["schema"] = tool
        llm = model.bind_tools([schema], tool_choice=tool["function"]["name"], strict=strict,
                               parallel_tool_calls=False, ls_structured_output_format=trace)
        parser = _tool_parser(schema, tool["function"]["name"])
    elif method == "json_mode":
        llm = model.bind(response_format={"type": "json_object"},
                         ls_structured_output_format=trace if schema is not None else None)
        parser = (PydanticOutputParser(pydantic_object=schema) if _is_pydantic(schema)
                  else JsonOutputParser())
    else:
        raise ValueError(f"method must be 'json_schema', 'function_calling' or 'json_mode', "
                         f"not {method!r}")
    return _with_raw(llm, parser) if include_raw else llm | parser


def json_schema_format(schema: SchemaLike, strict: bool | None) -> dict[str, Any]:
    """OpenAI's `response_format` of type "json_schema" for a pydantic / TypedDict / dict."""
    function = convert_to_openai_function(schema, strict=strict)
    spec = {"name": function["name"], "description": function.get("description"),
            "schema": function["parameters"], "strict": strict}
    return {"type": "json_schema",
            "json_schema": {k: v for k, v in spec.items() if v is not None}}


def _json_schema_parser(schema: SchemaLike) -> Runnable:
    if not _is_pydantic(schema):
        return JsonOutputParser()  # streams partial dicts
    parse = RunnableLambda(partial(_parse_model, schema=schema))  # one value, at the end
    return parse.with_types(output_type=schema)


def _parse_model(message: AIMessage, schema: type) -> Any:
    return PydanticOutputParser(pydantic_object=schema).parse(message.text)


def _tool_parser(schema: SchemaLike, name: str) -> Runnable:
    if _is_pydantic(schema):
        return PydanticToolsParser(tools=[schema], first_tool_only=True)
    return JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)


def _with_raw(llm: Runnable, parser: Runnable) -> Runnable:
    """`{"raw", "parsed", "parsing_error"}`: a parsing error is returned, not raised."""
    parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser,
                                        parsing_error=lambda _: None)
    unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | parsed.with_fallbacks([unparsed],
                                                        exception_key="parsing_error")


def _is_pydantic(schema: Any) -> bool:
    return isinstance(schema, type) and is_basemodel_subclass(schema)

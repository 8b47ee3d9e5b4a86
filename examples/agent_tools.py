"""A LangGraph ReAct agent with two Python tools on a Parrot server (docs/langchain-tools.md).

    parrot serve &
    python examples/agent_tools.py --url http://127.0.0.1:8000
    python examples/agent_tools.py --question "What is 12 times 12?" --auto

LangGraph's prebuilt `create_react_agent` runs the loop: the model answers with tool calls,
the `ToolNode` runs the Python functions, their results go back to the model as tool
messages, until the model answers in text. The embedded SmolLM2-135M rarely decides to call
a tool by itself, so by default each step sets `tool_choice`: "required" (the model picks
the tool and its arguments, the server's grammar makes them parse) for the first
`--tool-steps` steps, then "none" for the answer; tool schemas are closed (`strict=True`)
so it cannot invent extra arguments. `--auto` leaves every choice to the model, as a larger
served model would want. (The 135M model's "answer" may imitate a tool call in text.)
"""
from __future__ import annotations

import argparse
import warnings
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.prebuilt import create_react_agent

from langchain_parrot import ChatParrot

WEATHER = {"paris": "sunny, 21 C", "london": "light rain, 14 C", "tokyo": "cloudy, 18 C"}


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@tool
def get_weather(city: str) -> str:
    """Today's weather in a city."""
    return WEATHER.get(city.strip().lower(), f"no weather data for {city}")


TOOLS = [multiply, get_weather]


def guided_model(chat: ChatParrot, tool_steps: int):
    """The agent's model for each step: a tool call is required until `tool_steps` tool
    results are in the conversation, then the model answers in text."""
    def choose(state: dict[str, Any], runtime: Any) -> Any:
        done = sum(isinstance(m, ToolMessage) for m in state["messages"])
        choice = "required" if done < tool_steps else "none"
        return chat.bind_tools(TOOLS, tool_choice=choice, parallel_tool_calls=False,
                               strict=True)

    return choose


def build_agent(chat: ChatParrot, tool_steps: int, auto: bool) -> Any:
    with warnings.catch_warnings():  # its successor, langchain.agents.create_agent, needs
        warnings.simplefilter("ignore")  # the `langchain` package; this one is LangGraph's
        return create_react_agent(chat if auto else guided_model(chat, tool_steps), TOOLS)


def describe(message: BaseMessage) -> str:
    if isinstance(message, AIMessage) and message.tool_calls:
        return "model calls " + ", ".join(f"{c['name']}({c['args']})" for c in message.tool_calls)
    if isinstance(message, ToolMessage):
        return f"tool {message.name} -> {message.content}"
    role = "model" if isinstance(message, AIMessage) else "user"
    return f"{role}: " + " ".join(str(message.content).split())  # one line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="a `parrot serve` URL")
    parser.add_argument("--question",
                        default="What is 6 times 7, and what is the weather in Paris?")
    parser.add_argument("--tool-steps", type=int, default=2, help="tool calls required first")
    parser.add_argument("--auto", action="store_true", help="the model decides every step")
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()
    chat = ChatParrot(base_url=args.url, temperature=0, max_tokens=args.max_tokens)
    agent = build_agent(chat, args.tool_steps, args.auto)
    result = agent.invoke({"messages": [HumanMessage(args.question)]})
    for message in result["messages"]:
        print(describe(message))


if __name__ == "__main__":
    main()

"""The ecosystem's clients against a real server with a tiny random model, unchanged but for the
base URL: LangChain's ChatOpenAI (invoke, stream, bind_tools, with_structured_output by JSON
schema and by function calling), a pydantic-ai Agent with a pydantic output type, and an
openai-agents Agent with one function tool. Structured results validate because decoding is
constrained, not because the model is good (it is random)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import pydantic
import pytest

ASK = "Describe a person."


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=12)
    age: int = pydantic.Field(ge=0, le=120)


@pytest.fixture()
def chat(base_url):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=f"{base_url}/v1", api_key="unused", model="tiny", max_tokens=60, temperature=0.8,
                      seed=1, max_retries=0)


def test_langchain_invoke_and_stream(chat):
    reply = chat.invoke("Hello")
    assert isinstance(reply.content, str) and reply.response_metadata["finish_reason"] in ("stop", "length")
    pieces = [chunk.content for chunk in chat.stream("Hello")]
    assert len(pieces) > 1


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_with_structured_output(chat, method):
    person = chat.with_structured_output(Person, method=method).invoke(ASK)
    assert isinstance(person, Person) and 0 <= person.age <= 120


class City(pydantic.BaseModel):
    # Bounded: a random model never chooses to close a string, a real one does.
    city: str = pydantic.Field(max_length=10)


def test_langchain_bind_tools(chat):
    from langchain_core.tools import tool

    @tool(args_schema=City)
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    reply = chat.bind_tools([get_weather], tool_choice="get_weather").invoke("Weather in Paris?")
    [call] = reply.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)


def test_pydantic_ai_agent_with_an_output_type(base_url):
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel("tiny", provider=OpenAIProvider(base_url=f"{base_url}/v1", api_key="unused"))
    agent = Agent(model, output_type=Person, model_settings={"max_tokens": 60, "temperature": 0.8, "seed": 2})
    result = agent.run_sync(ASK)
    assert isinstance(result.output, Person)


def test_openai_agents_with_one_function_tool(base_url):
    from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # the SDK would export its own traces to OpenAI otherwise
    called = []

    @function_tool
    def get_weather(city: Annotated[str, pydantic.Field(max_length=10)]) -> str:
        """The weather in a city."""
        called.append(city)
        return f"sunny in {city}"

    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    agent = Agent(
        name="weather", instructions="Answer with the weather.", tools=[get_weather],
        model=OpenAIChatCompletionsModel(model="tiny", openai_client=client),
        model_settings=ModelSettings(tool_choice="required", max_tokens=120, temperature=0),  # greedy: the same call each run
        tool_use_behavior="stop_on_first_tool",
    )
    result = asyncio.run(Runner.run(agent, "Weather in Paris?"))
    assert called and result.final_output == f"sunny in {called[0]}"

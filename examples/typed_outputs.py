"""Typed Semantic Variables: a JSON output checked by a pydantic model, one of its fields fed
into a second call on the server, a regex and a choice output, all in chat role blocks that the
served model's chat template renders.

    python examples/typed_outputs.py --url http://127.0.0.1:8000
"""
from __future__ import annotations

import argparse

from pydantic import BaseModel

import parrot as P


class Person(BaseModel):
    model_config = {"extra": "forbid"}  # additionalProperties: false, or the model may add some

    name: str
    age: int


@P.semantic_function(max_tokens=48, outputs={"person": P.Output(json_schema=Person)})
def extract(text, person):
    """{{#system}}You extract facts as JSON.{{/system}}
    {{#user}}{{input:text}}{{/user}}
    {{#assistant}}{{output:person}}{{/assistant}}"""


@P.semantic_function(max_tokens=8, outputs={"year": P.Output(regex="(19|20)[0-9]{2}"),
                                            "mood": P.Output(choices=["happy", "sad"])})
def classify(name, text, year, mood):
    """{{#user}}{{input:text}} In which year was {{input:name}} born?{{/user}}
    {{#assistant}}{{output:year}}{{/assistant}}
    {{#user}}Is {{input:name}} happy or sad?{{/user}}
    {{#assistant}}{{output:mood}}{{/assistant}}"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    args = parser.parse_args()
    text = "Alice is 34 years old, born in 1990, and she smiles all day."
    with P.Session(args.url):
        person = extract(text)
        year, mood = classify(person["name"], text)  # the name never visits the client
        print("person:", Person.model_validate_json(person.get()))
        print("year:", year.get(), "mood:", mood.get())


if __name__ == "__main__":
    main()

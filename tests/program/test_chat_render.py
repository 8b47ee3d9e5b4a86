"""Unit tests: role blocks lowered through real chat templates (SmolLM2's own, and Qwen2- and
Llama-3-style templates written here), compared with apply_chat_template on the same talk."""
import pytest
from transformers import AutoTokenizer

from parrot.protocol.chat_render import chat_renderer, lower_roles
from parrot.protocol.template import Placeholder, Template, TemplateError, Text

QWEN2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
         "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
         "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
         "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
LLAMA3 = ("{{ '<|begin_of_text|>' }}{% for message in messages %}"
          "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
          "+ message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
THINKING = ("{% for m in messages %}<|{{ m['role'] }}|>{% if m['role'] == 'assistant' %}"
            "<think></think>{% endif %}{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")

TWO_TURNS = """{{#system}}
You answer in one word.
{{/system}}
{{#user}}Capital of {{input:country}}?{{/user}}
{{#assistant}}{{output:capital}}{{/assistant}}
{{#user}}And its river?{{/user}}
{{#assistant}}River: {{output:river}} is the answer{{/assistant}}"""


@pytest.fixture(scope="module")
def tokenizer(smollm_dir):
    return AutoTokenizer.from_pretrained(str(smollm_dir))


def renderer(tokenizer, template):
    if template is None:
        return chat_renderer(tokenizer)  # the model's own chat_template.jinja
    return lambda messages, gen: tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=gen)


def fill(pieces, values):
    return "".join(p.text if isinstance(p, Text) else values[p.name] for p in pieces)


@pytest.mark.parametrize("chat_template", [None, QWEN2, LLAMA3], ids=["smollm2", "qwen2", "llama3"])
def test_one_program_renders_as_each_chat_template_would(tokenizer, chat_template):
    render = renderer(tokenizer, chat_template)
    lowered = lower_roles(Template.parse(TWO_TURNS), render)
    assert not lowered.template.has_roles and lowered.template.outputs == ["capital", "river"]
    values = {"country": "France", "capital": "Paris", "river": "Seine"}
    talk = [{"role": "system", "content": "You answer in one word."},
            {"role": "user", "content": "Capital of France?"}]
    first, second = lowered.template.stages()
    assert fill(first.pieces, values) == render(talk, True)  # the generation prompt, exactly
    talk += [{"role": "assistant", "content": "Paris"},
             {"role": "user", "content": "And its river?"}]
    prompt = render(talk, True) + "River: "
    assert fill(first.pieces, values) + "Paris" + fill(second.pieces, values) == prompt
    assert lowered.stops == {"river": " is the answer"}


def test_markup_differs_per_template_and_prefix_is_constant(tokenizer):
    t = Template.parse(TWO_TURNS)
    smol = lower_roles(t, renderer(tokenizer, None)).template.stages()[0].pieces
    llama = lower_roles(t, renderer(tokenizer, LLAMA3)).template.stages()[0].pieces
    assert smol[0].text.startswith("<|im_start|>system\nYou answer in one word.<|im_end|>")
    assert llama[0].text.startswith("<|begin_of_text|><|start_header_id|>system")
    assert smol[1] == Placeholder("input", "country", 4, 21)
    # everything before the first input is constant text: calls share it as a prefix
    again = lower_roles(Template.parse(TWO_TURNS), renderer(tokenizer, None))
    assert again.template.stages()[0].pieces[0] == smol[0]


def test_templates_that_break_the_generation_prompt_are_refused(tokenizer):
    with pytest.raises(TemplateError, match="differently from its generation prompt"):
        lower_roles(Template.parse(TWO_TURNS), renderer(tokenizer, THINKING))
    with pytest.raises(TemplateError, match="need a chat template"):
        lower_roles(Template.parse(TWO_TURNS), None)
    refuse = "{{ raise_exception('no system role') }}"
    with pytest.raises(TemplateError, match="no system role"):
        lower_roles(Template.parse(TWO_TURNS), renderer(tokenizer, refuse))


def test_blocks_after_the_last_output_are_not_rendered(tokenizer):
    source = TWO_TURNS + "\n{{#user}}Thanks{{/user}}"
    lowered = lower_roles(Template.parse(source), renderer(tokenizer, None))
    assert "Thanks" not in lowered.template.source

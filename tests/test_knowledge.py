"Knowledge base: coverage of the vocabulary, user overrides, errors, prompts, fingerprint and query text."
import pytest
from medklip.core import MedklipError, InputError
from medklip.vocab import ENTITIES, POSITIONS
from medklip.text.knowledge import (load_knowledge, position_prompt, position_prompts, kb_hash, query_text)


def test_every_entity_and_position_is_described():
    kb = load_knowledge()
    assert list(kb.entities) == ENTITIES
    texts = kb.entity_texts() + kb.extra_texts()
    assert len(set(texts)) == len(texts), "two findings share a description"
    assert all(10 <= len(t.split()) <= 60 for t in texts)  # fits max_length=128 tokens with room
    assert all(e.category in kb.categories for e in [*kb.entities.values(), *kb.extra.values()])
    assert len(position_prompts()) == len(POSITIONS) == len(set(position_prompts()))


def test_zero_shot_findings_present():
    kb = load_knowledge()
    assert len(kb.extra) >= 12
    for name in ['COVID-19', 'tuberculosis', 'fibrosis', 'pneumoperitoneum', 'lung cancer', 'silicosis', 'PCP']:
        assert kb.find(name) is not None, name
    pp = kb.text('pneumoperitoneum').lower()
    assert all(w in pp for w in ['lucent', 'crescent', 'beneath', 'hemidiaphragm'])
    assert not set(kb.extra) & set(ENTITIES)


def test_position_prompt_words():
    assert position_prompt('left_costophrenic') == 'It is located at the left costophrenic angle.'
    assert 'right middle lobe' in position_prompt('middle_right_lobe')
    with pytest.raises(MedklipError): position_prompt('knee')


def test_user_file_overrides_and_adds(tmp_path):
    f = tmp_path / 'kb.yaml'
    f.write_text("categories:\n  cystic: Thin-walled round dark spaces.\n"
                 "entities:\n  nodule: A small round white spot in the lung.\n"
                 "extra:\n  lam:\n    name: lymphangioleiomyomatosis\n    aliases: [LAM]\n    category: cystic\n"
                 "    description: Many thin-walled cysts spread evenly through both lungs.\n")
    base, kb = load_knowledge(), load_knowledge(f)
    assert kb.text('nodule') == 'A small round white spot in the lung.'
    assert kb.entities['nodule'].category == base.entities['nodule'].category
    assert kb.entry('lam').key == 'lam' and kb.text('lam', visual=True).endswith('Thin-walled round dark spaces.')
    assert kb.extra_names[:-1] == base.extra_names
    assert kb_hash(kb) != kb_hash(base) and kb_hash(load_knowledge()) == kb_hash(base)
    assert load_knowledge(None).text('nodule') == load_knowledge('').text('nodule') == base.text('nodule')


@pytest.mark.parametrize('text,needle', [
    ("entities:\n  unicorn: a horse with a horn\n", "entities.unicorn"),
    ("extra:\n  thing: {category: opacity}\n", "extra.thing"),
    ("extra:\n  thing: {description: d, colour: red}\n", "unknown field"),
    ("extra:\n  thing: {description: d, category: sparkly}\n", "unknown category"),
    ("extra:\n  thing: {description: ''}\n", "non-empty"),
    ("extra:\n  thing: [1, 2]\n", "extra.thing"),
    ("findings:\n  a: b\n", "unknown section"),
    ("extra: {a: [\n", "not valid YAML"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_malformed_user_file_names_file_and_entry(tmp_path, text, needle):
    f = tmp_path / 'user_kb.yaml'
    f.write_text(text)
    with pytest.raises(InputError) as e: load_knowledge(f)
    assert 'user_kb.yaml' in str(e.value) and needle in str(e.value)


def test_missing_user_file(tmp_path):
    with pytest.raises(InputError, match='not found'): load_knowledge(tmp_path / 'nope.yaml')


def test_query_text_modes():
    kb = load_knowledge()
    assert query_text('covid', mode='name') == 'COVID-19'
    assert query_text('COVID-19', mode='description') == kb.extra['covid19'].description
    assert query_text('cardiomegaly', mode='name') == 'cardiomegaly'
    assert query_text('free air under the diaphragm') == kb.text('pneumoperitoneum')
    assert query_text('  my own words  ') == 'my own words'
    with pytest.raises(MedklipError): query_text('covid', mode='acronym')


def test_aspects_vocabulary_and_entries():
    kb = load_knowledge()
    names = kb.aspect_names()
    assert len(names) == len(set(names)) == len(kb.aspect_texts()) and 'place: below the diaphragm' in names
    assert {'density', 'shape', 'margin', 'place', 'size'} <= set(kb.aspect_types) and kb.aspect_source
    assert kb.entry_aspects('effusion')[:2] == ['density: opacity', 'shape: meniscus']
    assert kb.entry_aspects('normal') == [] and kb.entry_aspects('tip') == []
    assert set(kb.entry_aspects('pneumoperitoneum')) >= {'density: lucency', 'place: below the diaphragm'}
    m = kb.aspect_matrix(['effusion', 'normal', 'pneumoperitoneum'])
    assert [sum(r) for r in m] == [len(kb.entry_aspects(k)) for k in ('effusion', 'normal', 'pneumoperitoneum')]
    assert m[0][names.index('place: base')] == 1 and m[0][names.index('place: apex')] == 0


def test_user_aspects_extend_and_validate(tmp_path):
    f = tmp_path / 'kb.yaml'
    f.write_text("aspects:\n  types:\n    texture: {honeycomb: small clustered air cysts like a honeycomb}\n"
                 "extra:\n  ipf:\n    description: Idiopathic pulmonary fibrosis with coarse lines and honeycomb cysts at both bases.\n"
                 "    aspects: {texture: honeycomb, place: [base, mid zone], density: opacity}\n")
    base, kb = load_knowledge(), load_knowledge(f)
    assert kb.aspect_names() == base.aspect_names() + ['texture: honeycomb']
    assert kb.entry_aspects('ipf') == ['texture: honeycomb', 'place: base', 'place: mid zone', 'density: opacity']
    assert kb_hash(kb) != kb_hash(base) and 'texture' not in base.aspect_types   # the packaged base is not mutated
    g = tmp_path / 'bad.yaml'
    g.write_text("entities:\n  nodule: {aspects: {shape: star}}\n")
    with pytest.raises(InputError, match=r"entities\.nodule.*unknown shape value 'star'") as e: load_knowledge(g)
    assert 'bad.yaml' in str(e.value) and '\n' not in str(e.value)
    g.write_text("extra:\n  x:\n    description: some new finding with enough words to describe it well.\n    aspects: {colour: red}\n")
    with pytest.raises(InputError, match=r"extra\.x.*unknown aspect type 'colour'"): load_knowledge(g)
    g.write_text("entities:\n  nodule: {aspects: [round]}\n")
    with pytest.raises(InputError, match="must be a mapping"): load_knowledge(g)
    g.write_text("entities:\n  nodule: {aspects: null}\n")
    assert load_knowledge(g).entry_aspects('nodule') == []   # a user file may clear an entry's aspects


def test_kb_hash_without_aspects_is_unchanged():
    from dataclasses import replace
    kb = load_knowledge()
    bare = replace(kb, aspect_types={}, entities={k: replace(e, aspects=()) for k, e in kb.entities.items()},
                   extra={k: replace(e, aspects=()) for k, e in kb.extra.items()})
    import json
    from medklip.core import text_hash
    old = text_hash(json.dumps({'entities': bare.entity_texts(), 'extra': dict(zip(bare.extra_names, bare.extra_texts())),
                                'positions': position_prompts()}, sort_keys=True))
    assert kb_hash(bare) == old != kb_hash(kb)

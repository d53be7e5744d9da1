"medklip.core.load_params: sections, misspelt section names, broken YAML."
import pytest
from medklip.core import MedklipError, load_params


def test_misspelt_section_is_an_error_naming_the_right_one(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("pretrain:\n  epochs: 20\npretrian:\n  epochs: 5\n")
    for section in ("pretrain", None):
        with pytest.raises(MedklipError, match=r"section 'pretrian' is not one medklip reads; did you mean 'pretrain'\? rename it \(or merge"):
            load_params(p, section)
    p.write_text("pretrian:\n  epochs: 5\n")
    with pytest.raises(MedklipError, match="did you mean 'pretrain'"): load_params(p, "pretrain")
    p.write_text("pretrain:\n  epochs: 20\nmy_own_notes: {a: 1}\n")   # a section of the user's own is fine
    assert load_params(p, "pretrain") == {"epochs": 20}


def test_bad_yaml_is_one_line(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("pretrain:\n  epochs: [1, 2\n")
    with pytest.raises(MedklipError, match="not valid YAML") as e: load_params(p)
    assert "\n" not in str(e.value)

"""The notebooks' presets: the embedded one stays offline on the zoo, the paper one names SAEs the registry has."""

import pytest

from saelab import presets
from saelab.pretrained import PretrainedSpec, registry
from saelab.zoo_spec import SAESpec

PRESET_OF = {"04": presets.mosaic, "05": presets.ps_eval, "06": presets.steering}


@pytest.mark.parametrize("notebook", sorted(PRESET_OF))
def test_embedded_preset_uses_the_default_model_and_the_zoo(notebook):
    preset = PRESET_OF[notebook]("embedded")
    assert (preset.model, preset.dtype, preset.saes) == (None, None, "zoo")


@pytest.mark.parametrize("notebook", sorted(PRESET_OF))
def test_paper_preset_names_saes_that_the_saelens_registry_lists(notebook):
    preset = PRESET_OF[notebook]("paper")
    assert preset.model is not None
    saes = dict(preset.saes)
    if "second_sae" in preset.extra:
        saes["second"] = preset.extra["second_sae"]
    pretrained = [spec for spec in saes.values() if isinstance(spec, PretrainedSpec)]
    assert pretrained, "a paper preset loads at least one pretrained SAE"
    for spec in pretrained:
        assert spec.sae_id in registry()[spec.release].saes_map, spec
    assert all(isinstance(spec, (PretrainedSpec, SAESpec)) for spec in saes.values())


def test_steering_paper_preset_covers_every_average_l0_variant_at_three_layers():
    saes = presets.steering("paper").saes
    assert {name.split(" L0 ")[0] for name in saes} == {"jumprelu layer 10", "jumprelu layer 12", "jumprelu layer 20"}
    assert presets.steering("paper").extra["example"] in saes


def test_mosaic_paper_preset_has_the_papers_layers_and_the_pre_post_pair():
    preset = presets.mosaic("paper")
    assert preset.hooks == {"early": 5, "middle": 12, "late": 19}
    assert preset.saes[("middle", "pre", 16384)].hook == "blocks.11.hook_resid_post"


def test_unknown_preset_says_which_exist():
    with pytest.raises(ValueError, match="'embedded'.*'paper'"):
        presets.mosaic("papers")

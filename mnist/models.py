"""Energy networks for the MNIST experiments (paper §8.3).

``arch="igebm"`` is :class:`ebmref.nets.IGEBMEnergy`: the paper's network at ``width`` 64
(64→64→128→256 channels); smaller widths keep its topology at a fraction of the cost (at 16 one
Langevin step costs ~1/16, what makes a CPU run of section 6 possible). ``arch="multiscale"``
sums IGEBM energies at 28, 14 and 7 pixels (:class:`ebmref.nets.MultiScaleEnergy`, §5.2.1).
Which one a run used, and its width, is in the run's ``run.json``.
"""

from __future__ import annotations

from ebmref.energy import Energy
from ebmref.nets import IGEBMEnergy, MultiScaleEnergy
from ebmref.validation import check_choice

ARCHS = ("igebm", "multiscale")
# Names of earlier versions (their runs' run.json still say so): same networks, any width.
ARCH_ALIASES = {"igebm_narrow": "igebm", "multiscale_narrow": "multiscale"}


def build_energy(arch: str = "igebm", width: int = 64, spectral_norm: bool = False) -> Energy:
    """The energy named by a run's config (``arch``, ``width``, ``spectral_norm``)."""
    arch = ARCH_ALIASES.get(arch, arch)
    check_choice(arch, "arch", ARCHS)
    if arch == "igebm":
        return IGEBMEnergy(spectral_norm=spectral_norm, width=width)
    return MultiScaleEnergy(lambda s: IGEBMEnergy(spectral_norm, image_size=s, width=width),
                            scales=(28, 14, 7))

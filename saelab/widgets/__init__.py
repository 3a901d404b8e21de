"""ipywidgets explorers for the notebooks, one module per widget.

Widgets need a live kernel; the static figures and HTML of `saelab.viz` stay in a saved notebook. Every widget
shows a progress indicator while it computes and a readable message, never a traceback, on bad input: they build
on `saelab.widgets._common.StatusBar`.
"""

from saelab.widgets._common import StatusBar, WidgetInputError
from saelab.widgets.binarization import BinarizationExplorer, binarization_explorer
from saelab.widgets.latent_browser import LatentBrowser, latent_browser
from saelab.widgets.polysemy import PolysemyExplorer, polysemy_explorer
from saelab.widgets.pooling import PoolingExplorer, pooling_explorer, pooling_summary
from saelab.widgets.steering import SteeringPlayground, steering_playground

__all__ = ["StatusBar", "WidgetInputError", "LatentBrowser", "latent_browser", "PoolingExplorer",
           "pooling_explorer", "pooling_summary", "PolysemyExplorer", "polysemy_explorer",
           "SteeringPlayground", "steering_playground",
           "BinarizationExplorer", "binarization_explorer"]

# notebook 07 (appended)
from saelab.widgets.reformulation import ReformulationExplorer, reformulation_explorer

__all__ += ["ReformulationExplorer", "reformulation_explorer"]

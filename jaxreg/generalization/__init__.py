"""Generalization measures over whole sweeps, and how well each ranks the generalization gap.

Jiang et al. (2020, "Fantastic generalization measures and where to find them")
compare dozens of measures over thousands of networks by Kendall's τ with the
generalization gap, and by a *granulated* τ that varies one hyperparameter at a
time. Here every measure is a pure function of one model, so ``jax.vmap`` over a
stack of parameters (a :func:`jaxreg.sweeps.run`'s members) measures a whole sweep
in one program, and the rank statistics run on the results with bootstrap intervals.
"""

from jaxreg.generalization.kendall import TauInterval as TauInterval
from jaxreg.generalization.kendall import granulated_kendall_tau as granulated_kendall_tau
from jaxreg.generalization.kendall import kendall_tau as kendall_tau
from jaxreg.generalization.kendall import tau_intervals as tau_intervals
from jaxreg.generalization.measures import generalization_measures as generalization_measures
from jaxreg.generalization.measures import measure_sweep as measure_sweep
from jaxreg.generalization.measures import norm_measures as norm_measures
from jaxreg.generalization.measures import output_margin as output_margin
from jaxreg.generalization.measures import path_norm as path_norm
from jaxreg.generalization.measures import sharpness_measures as sharpness_measures
from jaxreg.generalization.measures import spectral_measures as spectral_measures
from jaxreg.generalization.measures import steps_to_loss as steps_to_loss

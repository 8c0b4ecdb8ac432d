"""The only place that touches model internals.

hookpoints.py     hook point names and shapes; attaching hooks safely
interventions.py  ONE definition per intervention kind (hook form + attribution delta); applying them per row
run.py            forward passes under interventions, captures, make_intervention, generation
sweep.py          the batched exact sweep over heads (prefix reuse);  attribution.py  gradient estimates
compare.py        base vs intervened generation and next-token tables (CLI `ablate`, the app)
checkpoint.py     resumable sweeps;  distributed.py  sharding a sweep over Ray workers
"""

"""Safety heads (Zhou et al., ICLR 2025, arXiv 2410.13708).

metrics.py  ships, ships-dataset, sahara (registered metrics) and the Sahara search
asr.py      attack success rate: generation under head ablations, the refusal judge, harmless-side cost
run.py      the recorded full run on the Qwen2.5-Coder testbeds (`interp safety run`)
"""

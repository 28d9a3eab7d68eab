"""Analysis of kdlite runs and data: knees, retention, loss gaps, the Markdown report, reasoning-trace
statistics and the compute profile. Everything here reads run directories or Examples; nothing
here trains. The study's own numbers live in `paper.py` so every table can show paper next to ours.
"""

#!/usr/bin/env python3
"""Side-by-side table of the delta ops' variants in one results folder: bench_linear.csv (default) and
bench_delta_*.csv, fwd / f+b ms and FLA's ratio per shape."""
import csv, glob, os, sys
d = sys.argv[1]
def rows(f):
    with open(f) as fh:
        return [r for r in csv.DictReader(l for l in fh if not l.startswith('#')) if r['impl'] == 'kernel']
files = [('default', os.path.join(d, 'bench_linear.csv'))] + sorted(
    (os.path.basename(f)[12:-4], f) for f in glob.glob(os.path.join(d, 'bench_delta_*.csv')))
tab = {}
for tag, f in files:
    if not os.path.exists(f): continue
    for r in rows(f):
        if not r['op'].startswith(('delta', 'gated')): continue
        key = (r['op'], int(r['D']), int(r['T']))
        bad = r.get('note', '')
        tab.setdefault(key, {})[tag] = (r['fwd_ms'], r['fwdbwd_ms'], r['ratio_fwd'], r['ratio_fwdbwd'], bad)
tags = [t for t, f in files if os.path.exists(f)]
print('| op | D | T | ' + ' | '.join(f'{t} fwd (FLA/x) | {t} f+b (FLA/x)' for t in tags) + ' |')
print('|---|---|---|' + '---|---|' * len(tags))
for key in sorted(tab):
    cells = []
    for t in tags:
        v = tab[key].get(t)
        cells += [f'{v[0]} ({v[2]})', f'{v[1]} ({v[3]})' + (f' {v[4]}' if v and v[4] else '')] if v else ['', '']
    print(f'| {key[0]} | {key[1]} | {key[2]} | ' + ' | '.join(cells) + ' |')

# prefill_latency: written by attnlab; run `gnuplot prefill_latency.gp` in this folder to redraw
set encoding utf8
set termoption noenhanced
set title 'Prefill latency' noenhanced font ',12'
set xlabel 'prompt length' noenhanced
set ylabel 'ms' noenhanced
set logscale x 2
set format x '%.0f'
set logscale y
set format y '%g'
set autoscale fix
set offsets graph 0.03, graph 0.03, graph 0.05, graph 0.05
set border 3 lc rgb '#444444'
set tics nomirror out scale 0.6
set grid xtics ytics mxtics mytics lt 1 lc rgb '#d8d8d8' lw 1, lt 1 lc rgb '#eeeeee' lw 1
set key outside right top vertical Left reverse noenhanced samplen 2.5 spacing 1.15
set style line 1 lc rgb '#1f77b4' lw 2 pt 7 ps 0.9
set style line 2 lc rgb '#ff7f0e' lw 2 pt 5 ps 0.9
set style line 3 lc rgb '#2ca02c' lw 2 pt 9 ps 0.9
set style line 4 lc rgb '#d62728' lw 2 pt 11 ps 0.9
set style line 5 lc rgb '#9467bd' lw 2 pt 13 ps 0.9
set style line 6 lc rgb '#8c564b' lw 2 pt 15 ps 0.9
set style line 7 lc rgb '#e377c2' lw 2 pt 6 ps 0.9
set style line 8 lc rgb '#7f7f7f' lw 2 pt 4 ps 0.9
set style line 9 lc rgb '#bcbd22' lw 2 pt 8 ps 0.9
set style line 10 lc rgb '#17becf' lw 2 pt 10 ps 0.9
set style line 11 lc rgb '#393b79' lw 2 pt 12 ps 0.9
set style line 12 lc rgb '#637939' lw 2 pt 14 ps 0.9
set terminal pngcairo size 900,560 enhanced font 'DejaVu Sans,10' background rgb 'white'
set termoption noenhanced
set output 'prefill_latency.png'
plot 'prefill_latency.dat' index 0 using 1:2 with linespoints ls 1 title 'softmax', \
     'prefill_latency.dat' index 1 using 1:2 with linespoints ls 2 title 'linear_attention', \
     'prefill_latency.dat' index 2 using 1:2 with linespoints ls 3 title 'gated_deltanet'
set terminal pdfcairo size 5.62in,3.50in enhanced font 'DejaVu Sans,8'
set termoption noenhanced
set output 'prefill_latency.pdf'
replot
set terminal svg size 900,560 dynamic enhanced font 'DejaVu Sans,11' background rgb 'white'
set termoption noenhanced
set output 'prefill_latency.svg'
replot
unset output

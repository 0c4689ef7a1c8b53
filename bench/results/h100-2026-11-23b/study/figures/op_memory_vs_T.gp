# op_memory_vs_T: written by attnlab; run `gnuplot op_memory_vs_T.gp` in this folder to redraw
set encoding utf8
set termoption noenhanced
set title 'Op memory (forward + backward)' noenhanced font ',12'
set xlabel 'T (tokens)' noenhanced
set ylabel 'peak bytes' noenhanced
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
set output 'op_memory_vs_T.png'
plot 'op_memory_vs_T.dat' index 0 using 1:2 with points ls 1 title 'softmax', \
     'op_memory_vs_T.dat' index 1 using 1:2 with points ls 2 title 'linear_attention', \
     'op_memory_vs_T.dat' index 2 using 1:2 with points ls 3 title 'gated_deltanet', \
     'op_memory_vs_T.dat' index 3 using 1:2 with lines ls 1 dt 2 title 'softmax fit', \
     'op_memory_vs_T.dat' index 4 using 1:2 with lines ls 2 dt 2 title 'linear_attention fit', \
     'op_memory_vs_T.dat' index 5 using 1:2 with lines ls 3 dt 2 title 'gated_deltanet fit', \
     keyentry with lines lc rgb 'white' lw 0 title 'softmax: slope 1.00, r² 1.000', \
     keyentry with lines lc rgb 'white' lw 0 title 'linear_attention: slope 1.00, r² 1.000', \
     keyentry with lines lc rgb 'white' lw 0 title 'gated_deltanet: slope 1.00, r² 1.000'
set terminal pdfcairo size 5.62in,3.50in enhanced font 'DejaVu Sans,8'
set termoption noenhanced
set output 'op_memory_vs_T.pdf'
replot
set terminal svg size 900,560 dynamic enhanced font 'DejaVu Sans,11' background rgb 'white'
set termoption noenhanced
set output 'op_memory_vs_T.svg'
replot
unset output

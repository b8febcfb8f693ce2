# bench/targets.awk: the TARGET lines of bench/paired.c (fields split on
# "|": TARGET, setting, label, median, min, max, goal, result), one per
# process that ran the group, to one line per target: the median of the
# processes' medians, the least and greatest repetition of any, the goal,
# met or not by that median of medians, and each process's median (a
# process whose repetitions were disturbed says so). run.sh runs it.

# The median of the numbers in s (space-separated).
function median(s,   v, n, i, j, t) {
    n = split(s, v, " ")
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) {
            t = v[j]; v[j] = v[j - 1]; v[j - 1] = t
        }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}

# Ratios with two decimals; sizes (KiB) whole.
function num(v) {
    return v >= 10 ? sprintf("%.0f", v) : sprintf("%.2f", v)
}

{
    k = $2 "|" $3
    if (!(k in goal)) { order[++nk] = k; goal[k] = $7 }
    if ($4 == "n/a") next
    meds[k] = meds[k] " " $4
    if (!(k in lo) || $5 + 0 < lo[k]) lo[k] = $5 + 0
    if (!(k in hi) || $6 + 0 > hi[k]) hi[k] = $6 + 0
    if ($8 ~ /disturbed/) dist[k] = 1
}

END {
    for (i = 1; i <= nk; i++) {
        k = order[i]; split(k, f, "|")
        if (!(k in meds)) {
            printf "%-12s %-55s %8s %-16s %-9s %s\n", f[1], f[2], "n/a", "", goal[k], "n/a"
            continue
        }
        m = median(meds[k]); split(goal[k], g, " ")
        met = g[1] == ">=" ? m >= g[2] : m <= g[2]
        printf "%-12s %-55s %8s %-16s %-9s %-8s%s\n", f[1], f[2], num(m),
            "[" num(lo[k]) " .. " num(hi[k]) "]", goal[k],
            (met ? "met" : "NOT MET"), meds[k] (k in dist ? " (disturbed reps)" : "")
    }
}

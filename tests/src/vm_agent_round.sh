  for f in "$d"/cmd-*.sh; do
    [ -e "$f" ] || continue
    n=${f#"$d"/cmd-}; n=${n%.sh}
    sh "$f" > "$d/out-$n" 2>&1 < /dev/null; echo $? > "$d/rc-$n.tmp"
    mv "$d/rc-$n.tmp" "$d/rc-$n"; rm -f "$f"
  done

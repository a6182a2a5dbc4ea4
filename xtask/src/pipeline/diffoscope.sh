# Stage diffoscope: explain the files two builds disagree on. /build/diff/names.tsv lists
# "<n><TAB><path>"; the two versions are /build/diff/a/<n>/<name> and /build/diff/b/<n>/<name>
# (the file name is kept, diffoscope reads formats from it). One text report per file.
mkdir -p /out/diffoscope
tab=$(printf '\t')
while IFS="$tab" read -r n path; do
    name=$(basename "$path")
    # diffoscope exits 1 when the files differ, which is the expected case here.
    diffoscope --text "/out/diffoscope/$n-$name.txt" \
        "/build/diff/a/$n/$name" "/build/diff/b/$n/$name" || test $? -eq 1
done < /build/diff/names.tsv

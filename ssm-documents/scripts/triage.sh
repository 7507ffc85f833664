#!/usr/bin/env bash
# Cleanroom-Triage: Sleuth Kit triage of an evidence volume, never mounted: partitions and
# file systems (mmls, fsstat), the full listing as a bodyfile (fls -r -m), a mactime
# timeline (CSV, UTC), the key files (logs, histories, cron, systemd, start-up files,
# authorized_keys, accounts, sudoers, executables in temporary directories, ld.so.preload)
# extracted with icat into key-files.tar.gz with their SHA-256, and findings (triage.py).
# See lib.sh for the environment and README.md for the result JSON.
if ! declare -F cl_init >/dev/null; then
    # shellcheck source=/dev/null # lib.sh, linted on its own
    source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
fi

triage_main() {
    cl_init triage cleanroom.triage/1 triage.json key-files.tar.gz bodyfile.txt timeline.csv mmls.txt fsstat.txt
    cl_tools python3 openssl jq mmls fsstat fls icat istat mactime
    cl_layout 1

    local bodyfile="$CL_OUT/bodyfile.txt" offset ss prefix rc mactime_pid mactime_rc=0
    : >"$bodyfile"
    while IFS=$'\t' read -r offset ss prefix; do
        rc=0
        fls -r -m "$prefix" -b "$ss" -o "$offset" "$CL_IMAGE" >>"$bodyfile" 2>"$CL_WORK/fls.err" || rc=$?
        # A damaged (or hostile) file system can stop fls part-way: keep what it listed.
        ((rc == 0)) || cl_warn "fls stopped with status $rc on the file system at sector $offset: the listing may be incomplete ($(head -c 300 "$CL_WORK/fls.err" | tr '\n' ' '))"
    done < <(jq -r '.filesystems[] | [.offset_sector, .sector_size, .bodyfile_prefix] | @tsv' "$CL_WORK/layout.json")

    # The timeline and the key files are independent: mactime runs beside triage.py.
    mactime -b "$bodyfile" -d -y -z UTC >"$CL_OUT/timeline.csv" 2>"$CL_WORK/mactime.err" &
    mactime_pid=$!
    cl_py triage.py "$CL_IMAGE" "$CL_WORK/layout.json" "$bodyfile" "$CL_OUT" >"$CL_WORK/fields.json" ||
        cl_die "$CL_EXIT_FAILED" "triage.py failed on $CL_IMAGE: see its messages above"
    wait "$mactime_pid" || mactime_rc=$?
    ((mactime_rc == 0)) || cl_die "$CL_EXIT_FAILED" "mactime failed (status $mactime_rc): $(head -c 300 "$CL_WORK/mactime.err")"

    local w name
    while IFS= read -r w; do cl_warn "$w"; done < <(jq -r '.triage_warnings[]' "$CL_WORK/fields.json")
    for name in triage.json key-files.tar.gz bodyfile.txt timeline.csv mmls.txt; do
        [[ "$name" == triage.json ]] || cl_add_output "$name" "$CL_OUT/$name"
    done
    while IFS= read -r name; do
        cl_add_output "$name" "$CL_OUT/$name"
    done < <(jq -r '.filesystems[].fsstat_output' "$CL_WORK/layout.json")
    jq 'del(.triage_warnings) + {fsstat_outputs: "fsstat.txt for one file system; fsstat-<offset in sectors>.txt each when there are several (filesystems[].fsstat_output)"}' \
        "$CL_WORK/fields.json" >"$CL_WORK/fields2.json"
    cl_finish "$CL_WORK/fields2.json"
}

triage_main "$@"

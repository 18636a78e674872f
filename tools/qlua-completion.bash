# bash completion for qlua (tools/qlua.in), installed by meson as bash-completion's file "qlua".
# Completes the commands, run's options, the shipped scripts' names (ROOT/scripts/*.lua, ROOT
# being QLUA_ROOT or the folder meson installed them in, as the launcher does), the plugin's own
# options and a shipped script's declared arguments with their values, then the program after
# "--".
# It uses no helper of the bash-completion package, so that it also works when sourced alone.
# Replies are split at newlines only (IFS) with globbing off, so COMPREPLY=($(compgen ...)) keeps
# file names with spaces or * as they are.
# shellcheck disable=SC2207

_qlua_root='@ROOT@'

# the script names, from the folder the launcher reads them from
_qlua_script_names() {
    local - root=${QLUA_ROOT:-$_qlua_root} f
    set +f # _qlua turns globbing off
    for f in "$root"/scripts/*.lua; do
        [[ -f $f ]] || continue
        f=${f##*/}
        printf '%s\n' "${f%.lua}"
    done
}

# a script's arguments as `qlua help` prints them, "name=type" a line ("  name=type (default
# ...)  help"); remembered (global: bash-completion sources this file inside a function), because
# help runs the script's top level in a sandboxed Lua process, too slow to repeat on every TAB.
# Shipped scripts only: a TAB should not run the top level of whatever file was typed.
declare -gA _qlua_args_of
_qlua_script_args() { # launcher, script
    local key="$1|$2" IFS=$'\n'
    [[ $2 != */* ]] && grep -qxF -e "$2" <<<"$(_qlua_script_names)" || return 0
    if [[ -z ${_qlua_args_of[$key]+set} ]]; then
        _qlua_args_of[$key]=$("$1" help "$2" 2>/dev/null |
            sed -n 's/^  \([A-Za-z0-9_.-]*=[^ ]*\).*/\1/p')
    fi
    printf '%s\n' "${_qlua_args_of[$key]}"
}

# the values a script's argument takes, from its type: a bool's words, an enum's a|b|c
_qlua_script_values() { # launcher, script, argument
    local arg type
    while IFS= read -r arg; do
        [[ ${arg%%=*} == "$3" ]] || continue
        type=${arg#*=}
        case $type in
            bool) printf '%s\n' on off ;;
            *'|'*) printf '%s\n' "${type//|/$'\n'}" ;;
        esac
    done < <(_qlua_script_args "$1" "$2")
}

# the plugin's own options (shim/plugin.c's table) and their choices; repl= takes a path. No
# script=: the launcher gives the plugin the script it was named itself.
_qlua_plugin_options=$'onerror=\ncounters=\nprofile=\nexec=\nrecords=\nrepl=\nwatch='
_qlua_option_values() {
    case $1 in
        onerror) printf '%s\n' fail warn ;;
        counters) printf '%s\n' auto callback ;;
        profile | watch) printf '%s\n' on off ;;
        exec) printf '%s\n' queued sync ;;
        records) printf '%s\n' 64M off ;;
    esac
}

# a script is a shipped name, or a path: .lua files and the folders that may hold one
_qlua_complete_script() {
    COMPREPLY=($(compgen -W "$(_qlua_script_names)" -- "$1")
               $(compgen -f -X '!*.lua' -- "$1") $(compgen -d -S / -- "$1"))
    [[ ${COMPREPLY[*]} == */ ]] && compopt -o nospace 2>/dev/null
}

_qlua() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local - IFS=$'\n'
    set -f
    COMPREPLY=()
    if ((COMP_CWORD == 1)); then
        COMPREPLY=($(compgen -W $'run\n-e\nlist\nhelp\nattach\n--help\n--version' -- "$cur"))
        return
    fi
    case ${COMP_WORDS[1]} in
        help)
            ((COMP_CWORD == 2)) && _qlua_complete_script "$cur"
            return ;;
        attach)
            ((COMP_CWORD == 2)) && COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
        list | --help | -h | --version)
            return ;;
        run | -e) ;;
        *)
            return ;;
    esac

    # run [OPTIONS] SCRIPT [KEY=VALUE ...] -- PROGRAM ...; -e CODE [OPTIONS] [KEY=VALUE ...] -- ...
    local i=2 script="" system="" dashdash=0
    [[ ${COMP_WORDS[1]} == -e ]] && { ((COMP_CWORD == 2)) && return; script=-e; i=3; }
    for ((; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            --) dashdash=$i; break ;;
            --qemu | -o) ((i++)) ;;
            --system) system=1 ;;
            -* | =) ;;
            *) [[ -z $script && ${COMP_WORDS[i+1]} != = ]] && script=${COMP_WORDS[i]} ;;
        esac
    done
    if ((dashdash)); then
        # the program (user mode) and its arguments, or qemu-system's arguments
        if [[ -z $system ]] && ((COMP_CWORD == dashdash + 1)); then
            COMPREPLY=($(compgen -c -- "$cur") $(compgen -f -- "$cur"))
        else
            COMPREPLY=($(compgen -f -- "$cur"))
        fi
        return
    fi
    case $prev in
        --qemu) COMPREPLY=($(compgen -c -- "$cur") $(compgen -f -- "$cur")); return ;;
        -o) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W $'--qemu\n-o\n--system\n--' -- "$cur"))
        return
    fi
    if [[ -z $script ]]; then
        _qlua_complete_script "$cur"
        return
    fi

    # KEY=VALUE: bash splits the word at '=' (COMP_WORDBREAKS), so a value being typed is the word
    # after a "=" word; without that split, it is the text after the word's first '='
    local key="" value="" lead=""
    if [[ $cur == = ]]; then
        key=$prev
    elif [[ $prev == = ]]; then
        key=${COMP_WORDS[COMP_CWORD-2]} value=$cur
    elif [[ $cur == *=* ]]; then
        key=${cur%%=*} value=${cur#*=} lead="$key="
    fi
    if [[ -n $key ]]; then
        case $key in
            repl) COMPREPLY=($(compgen -f -- "$value")) ;;
            onerror | counters | profile | exec | records | watch)
                COMPREPLY=($(compgen -W "$(_qlua_option_values "$key")" -- "$value")) ;;
            *)
                [[ $script != -e ]] && COMPREPLY=($(compgen -W \
                    "$(_qlua_script_values "${COMP_WORDS[0]}" "$script" "$key")" -- "$value")) ;;
        esac
        ((${#COMPREPLY[@]})) && COMPREPLY=("${COMPREPLY[@]/#/$lead}")
        return
    fi
    local keys=$_qlua_plugin_options
    [[ $script != -e ]] && keys+=$'\n'$(_qlua_script_args "${COMP_WORDS[0]}" "$script" |
        sed 's/=.*/=/')
    COMPREPLY=($(compgen -W "$keys"$'\n--' -- "$cur"))
    [[ ${COMPREPLY[*]} == *= ]] && compopt -o nospace 2>/dev/null
}
complete -F _qlua qlua

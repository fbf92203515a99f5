// `prism completion bash`: a bash completion script made from the command tree itself, so it always
// knows every command and option there is. `source <(prism completion bash)`, or save it in
// /etc/bash_completion.d/prism.
import type { Command } from 'commander';

export function bashCompletion(p: Command): string {
  const cases: string[] = [];
  const walk = (c: Command, path: string) => {
    const words = [...c.commands.map((x) => x.name()), ...c.options.flatMap((o) => [o.long, o.short]).filter((w): w is string => !!w), '--help'];
    cases.push(`    '${path}') echo '${words.join(' ')}' ;;`);
    for (const s of c.commands) walk(s, path ? `${path} ${s.name()}` : s.name());
  };
  walk(p, '');
  return `# bash completion for ${p.name()}, made by \`${p.name()} completion bash\`
_prism_words() {
  case "$1" in
${cases.join('\n')}
  esac
}
_prism() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" path="" w
  # the command path so far: the words that name a subcommand of the path before them
  for w in "\${COMP_WORDS[@]:1:COMP_CWORD-1}"; do
    case "$w" in -*) continue ;; esac
    case " $(_prism_words "$path") " in *" $w "*) path="\${path:+$path }$w" ;; esac
  done
  COMPREPLY=($(compgen -W "$(_prism_words "$path")" -- "$cur"))
}
complete -o default -F _prism ${p.name()}
`;
}

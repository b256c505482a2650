package config

import (
	"fmt"
	"strings"
)

// entry is one option's value and where it was read.
type entry struct {
	value string
	file  string
	line  int
}

// ini holds parsed files: section -> option -> entry. Later assignments
// replace earlier ones, across files as within one.
type ini map[string]map[string]entry

// normalizeSection mirrors oslo.config: section names are case-insensitive
// except DEFAULT.
func normalizeSection(name string) string {
	if name == "DEFAULT" {
		return name
	}
	return strings.ToLower(name)
}

// normalizeOption mirrors oslo.config's dest names: dashes are underscores.
func normalizeOption(name string) string { return strings.ReplaceAll(name, "-", "_") }

// parse reads an oslo.config INI file into into, with oslo's iniparser
// rules: '#' and ';' comment lines, "key = value" or "key: value" (the first
// separator wins), matching quotes stripped, indented lines continuing the
// previous value, blank lines ending it.
func (into ini) parse(data, file string) error {
	var section, key string
	var value []string
	var keyLine int
	flush := func() {
		if key == "" {
			return
		}
		s := into[section]
		if s == nil {
			s = map[string]entry{}
			into[section] = s
		}
		s[normalizeOption(key)] = entry{value: strings.Join(value, "\n"), file: file, line: keyLine}
		key, value = "", nil
	}
	for i, raw := range strings.Split(data, "\n") {
		lineno := i + 1
		line := strings.TrimRight(raw, " \t\r\f\v")
		switch {
		case line == "":
			flush()
			continue
		case line[0] == ' ' || line[0] == '\t':
			if key == "" {
				return fmt.Errorf("%s:%d: continuation line without an option before it", file, lineno)
			}
			value = append(value, strings.TrimLeft(line, " \t"))
			continue
		}
		flush()
		switch {
		case line[0] == '[':
			if !strings.HasSuffix(line, "]") || len(line) < 3 {
				return fmt.Errorf("%s:%d: invalid section header %q", file, lineno, line)
			}
			section = normalizeSection(strings.TrimSpace(line[1 : len(line)-1]))
		case line[0] == '#' || line[0] == ';':
		default:
			k, v, ok := splitKeyValue(line)
			if !ok {
				return fmt.Errorf("%s:%d: expected \"option = value\", got %q", file, lineno, line)
			}
			if k == "" {
				return fmt.Errorf("%s:%d: empty option name", file, lineno)
			}
			if section == "" {
				return fmt.Errorf("%s:%d: option %q before any [section]", file, lineno, k)
			}
			key, value, keyLine = k, []string{v}, lineno
		}
	}
	flush()
	return nil
}

// splitKeyValue splits at the first '=' or ':' and strips one pair of
// matching quotes from the value, as oslo's iniparser does.
func splitKeyValue(line string) (key, value string, ok bool) {
	i := strings.IndexAny(line, "=:")
	if i < 0 {
		return "", "", false
	}
	key, value = strings.TrimSpace(line[:i]), strings.TrimSpace(line[i+1:])
	if len(value) >= 2 && (value[0] == '"' || value[0] == '\'') && value[len(value)-1] == value[0] {
		value = value[1 : len(value)-1]
	}
	return key, value, true
}

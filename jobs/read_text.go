package jobs

import "bytes"

// nextText reads one prompt per line. Surrounding white space is dropped (it is invisible
// in an editor, and the format has no quoting to keep it), and a line whose first
// non-space character is "#" is a comment, so a prompt cannot start with "#".
func (r *Reader) nextText() (Item, error) {
	for {
		line, long, err := r.line()
		if err != nil {
			return Item{}, err
		}
		n := r.lr.n
		if long > 0 {
			return Item{}, r.lineErr(n, line, nil, tooLong(long, r.lr.max))
		}
		prompt := bytes.TrimSpace(line)
		if len(prompt) == 0 || prompt[0] == '#' {
			continue
		}
		return r.finish(n, line, Spec{Prompt: string(prompt)}, nil)
	}
}

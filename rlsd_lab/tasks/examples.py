"""Small example datasets, one per verifier, generated from templates with seeded RNGs.

`python -m rlsd_lab.tasks.examples [--out DIR]` writes (default DIR: data/examples of the project):

    math/{train,val}.jsonl       embedded-format sums ("347+285", reference = column solution) mixed with word
                                 problems answered in \\boxed{} (fractions, equations, percentages)
    code/{train,val}.jsonl       stdin/stdout programs and a few define-f(...) functions; extra "tests"
    sql/{train,val}.jsonl        questions over sql/shop.sql; answer = reference = the gold query; extra "db"
    sql/shop.sql                 the database as a script (CREATE TABLE + INSERT)
    json/{train,val}.jsonl       objects to produce; extra "schema" (JSON Schema); answer = reference = the JSON
    verl_math/train.parquet      math train rows in veRL's layout, to show that layout loads unchanged

Every row has a `reference`: the privileged information the teacher sees. The output is the same byte for byte
on every run (the parquet file up to the pyarrow version), so tests regenerate it and compare.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import reduce
from pathlib import Path

from rlsd_lab.tasks.arith import addition_solution
from rlsd_lab.tasks.dataset import PROJECT_ROOT

EXAMPLES_DIR = PROJECT_ROOT / "data" / "examples"
NAMES = ["Ada", "Ben", "Chloe", "Dev", "Emil", "Fatima", "Grace", "Hugo", "Ines", "Jun", "Kofi", "Lena"]
WORDS = ["apple", "river", "Stone", "cloud", "banana", "Orbit", "level", "garden", "Python", "noon", "tiger",
         "window", "Echo", "radar", "mango", "silver"]


# ---- math -------------------------------------------------------------------------------------------------------

BOXED = "Put the final answer in \\boxed{}."


def _tex(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"\\frac{{{value.numerator}}}{{{value.denominator}}}"


def _reduced(top: int, bottom: int) -> str:
    """`\\frac{top}{bottom}`, followed by its lowest terms when those differ."""
    written, value = f"\\frac{{{top}}}{{{bottom}}}", _tex(Fraction(top, bottom))
    return written if written == value else f"{written} = {value}"


def _decimal(hundredths: int) -> str:
    """An exact decimal for a non-negative number of hundredths: 1250 -> "12.5"."""
    whole, cents = divmod(hundredths, 100)
    return f"{whole}.{cents:02d}".rstrip("0").rstrip(".")


def _pizza(rng: random.Random) -> tuple[str, str, str]:
    slices = rng.choice([4, 6, 8, 10, 12])
    a = rng.randint(1, slices - 2)
    b = rng.randint(1, slices - 1 - a)
    first, second = rng.sample(NAMES, 2)
    eaten = Fraction(a + b, slices)
    question = (f"A pizza is cut into {slices} equal slices. {first} eats {a} slices and {second} eats {b}. "
                f"What fraction of the pizza did they eat together? Give the fraction in lowest terms.")
    steps = f"Together they eat {a} + {b} = {a + b} of the {slices} slices: {_reduced(a + b, slices)}."
    return question, _tex(eaten), steps


def _fraction_sum(rng: random.Random) -> tuple[str, str, str]:
    b, d = rng.sample([2, 3, 4, 5, 6, 8, 10], 2)
    a, c = rng.randint(1, b - 1), rng.randint(1, d - 1)
    total, common = Fraction(a, b) + Fraction(c, d), math.lcm(b, d)
    x, y = a * common // b, c * common // d
    question = f"Compute \\frac{{{a}}}{{{b}}} + \\frac{{{c}}}{{{d}}}. Give the result as a fraction in lowest terms."
    steps = (f"The common denominator is {common}: \\frac{{{x}}}{{{common}}} + \\frac{{{y}}}{{{common}}} = "
             f"{_reduced(x + y, common)}.")
    return question, _tex(total), steps


def _simplify(rng: random.Random) -> tuple[str, str, str]:
    value = Fraction(rng.randint(1, 9), rng.choice([2, 4, 5, 8, 10, 20]))
    while value.denominator == 1:
        value = Fraction(rng.randint(1, 9), rng.choice([2, 4, 5, 8, 10, 20]))
    factor = rng.randint(2, 9)
    top, bottom = value.numerator * factor, value.denominator * factor
    question = f"Simplify the fraction \\frac{{{top}}}{{{bottom}}}."
    steps = f"The greatest common divisor of {top} and {bottom} is {factor}; dividing both by it gives {_tex(value)}."
    return question, _tex(value), steps


def _linear(rng: random.Random) -> tuple[str, str, str]:
    x, a, b = rng.randint(-9, 12), rng.randint(2, 9), rng.choice([n for n in range(-20, 21) if n])
    c = a * x + b
    sign = "+" if b > 0 else "-"
    question = f"Solve for x: {a}x {sign} {abs(b)} = {c}."
    move = f"Subtract {b} from" if b > 0 else f"Add {-b} to"
    steps = f"{move} both sides: {a}x = {c - b}. Divide both sides by {a}: x = {x}."
    return question, str(x), steps


def _percent_of(rng: random.Random) -> tuple[str, str, str]:
    percent, amount = rng.choice([5, 10, 12, 15, 20, 25, 30, 40, 45, 50, 60, 75]), rng.randrange(20, 401, 2)
    answer = _decimal(percent * amount)
    question = f"What is {percent}% of {amount}?"
    steps = f"{percent}% of {amount} is {amount} \\cdot \\frac{{{percent}}}{{100}} = {answer}."
    return question, answer, steps


def _discount(rng: random.Random) -> tuple[str, str, str]:
    price, percent = rng.randrange(20, 201, 4), rng.choice([10, 15, 20, 25, 30, 35, 40, 50])
    answer, saved = _decimal(price * (100 - percent)), _decimal(price * percent)
    question = f"A jacket costs ${price}. It is on sale for {percent}% off. What is the sale price in dollars?"
    steps = f"The discount is {percent}% of {price} = {saved}, so the sale price is {price} - {saved} = {answer}."
    return question, answer, steps


def _marbles(rng: random.Random) -> tuple[str, str, str]:
    share = Fraction(rng.randint(1, 4), rng.choice([3, 4, 5, 6]))
    while share >= 1:
        share = Fraction(rng.randint(1, 4), rng.choice([3, 4, 5, 6]))
    total, name = share.denominator * rng.randint(3, 12), rng.choice(NAMES)
    given = total * share
    question = (f"{name} has {total} marbles and gives away {_tex(share)} of them. "
                f"How many marbles does {name} have left?")
    steps = f"{_tex(share)} of {total} is {given}, so {name} keeps {total} - {given} = {total - given}."
    return question, str(total - given), steps


WORD_PROBLEMS = (_pizza, _fraction_sum, _simplify, _linear, _percent_of, _discount, _marbles)


def math_rows() -> tuple[list[dict], list[dict]]:
    """Half embedded-format sums, half word problems; train 120 rows, val 30, no question in both."""
    rng = random.Random("examples-math")
    sums: dict[str, dict] = {}
    while len(sums) < 75:
        a, b = rng.randint(100, 999), rng.randint(100, 999)
        sums.setdefault(f"{a}+{b}", {"prompt": f"{a}+{b}", "answer": str(a + b),
                                     "reference": addition_solution([a, b])})
    words: dict[str, dict] = {}
    while len(words) < 75:
        question, answer, steps = rng.choice(WORD_PROBLEMS)(rng)
        words.setdefault(question, {"prompt": f"{question} {BOXED}", "answer": answer,
                                    "reference": f"{steps}\nThe answer is \\boxed{{{answer}}}."})
    return _split(rng, list(sums.values()), list(words.values()), val_share=15)


# ---- code -------------------------------------------------------------------------------------------------------

STDIO_INSTRUCTIONS = ("Write a Python program that reads standard input and prints the answer to standard output. "
                      "Answer with the complete program in a ```python code block.")
FUNCTION_INSTRUCTIONS = ("Answer with the function definition in a ```python code block; "
                         "the function must not read input or print.")


@dataclass(frozen=True)
class CodeProblem:
    """One instantiated template. `solve` is the reference logic in plain Python: it computes the expected outputs
    here, independently of `program` (the text the model should match), so the test can check one against the other.
    """

    statement: str
    program: str
    solve: Callable[[str], str]
    inputs: list[str]


def _numbers_line(rng: random.Random, low: int = -50, high: int = 100, count: tuple[int, int] = (3, 10)) -> str:
    return " ".join(str(rng.randint(low, high)) for _ in range(rng.randint(*count))) + "\n"


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) + "\n"


def _sum_multiples(rng: random.Random) -> CodeProblem:
    k = rng.randint(2, 7)
    return CodeProblem(
        f"The input is one line of space-separated integers. Print the sum of those that are divisible by {k}.",
        f"numbers = [int(x) for x in input().split()]\nprint(sum(x for x in numbers if x % {k} == 0))\n",
        lambda text: f"{sum(x for x in map(int, text.split()) if x % k == 0)}\n",
        [_numbers_line(rng) for _ in range(4)])


def _reverse(rng: random.Random) -> CodeProblem:
    words, case = rng.choice([False, True]), rng.choice(["upper", "lower", ""])
    what = "its words in reverse order (words are separated by single spaces)" if words else "it reversed"
    suffix = f", in {case} case" if case else ""
    body = "' '.join(line.split(' ')[::-1])" if words else "line[::-1]"
    program = f"line = input()\nprint({body}{f'.{case}()' if case else ''})\n"

    def solve(text: str) -> str:
        line = text.rstrip("\n")
        result = " ".join(line.split(" ")[::-1]) if words else line[::-1]
        return (getattr(result, case)() if case else result) + "\n"

    return CodeProblem(f"Read one line of text and print {what}{suffix}.", program, solve,
                       [_sentence(rng) for _ in range(4)])


def _count_letters(rng: random.Random) -> CodeProblem:
    letters = "aeiou" if rng.random() < 0.4 else "".join(sorted(rng.sample(sorted(set("".join(WORDS))), 3)))

    def solve(text: str) -> str:
        line = text.rstrip("\n")
        return f"{sum(ch in letters for ch in line)}\n"

    return CodeProblem(
        f"Read one line of text and print how many of its characters are one of the lower-case letters "
        f"{', '.join(letters)}.",
        f"print(sum(ch in {letters!r} for ch in input()))\n", solve, [_sentence(rng) for _ in range(4)])


def _fizzbuzz(rng: random.Random) -> CodeProblem:
    a, b = sorted(rng.sample(range(2, 8), 2))
    first, second = rng.sample(["Fizz", "Buzz", "Ping", "Pong", "Zap"], 2)
    program = (f"n = int(input())\nfor i in range(1, n + 1):\n    word = ({first!r} if i % {a} == 0 else '') + "
               f"({second!r} if i % {b} == 0 else '')\n    print(word or i)\n")

    def solve(text: str) -> str:
        lines = []
        for i in range(1, int(text) + 1):
            word = (first if i % a == 0 else "") + (second if i % b == 0 else "")
            lines.append(word or str(i))
        return "".join(line + "\n" for line in lines)

    return CodeProblem(
        f"Read an integer n. For every i from 1 to n print one line: {first}{second} if i is divisible by both "
        f"{a} and {b}, {first} if only by {a}, {second} if only by {b}, otherwise i itself.",
        program, solve, [f"{n}\n" for n in [rng.randint(1, 5), rng.randint(6, 15), rng.randint(16, 40)]])


def _kth_extreme(rng: random.Random) -> CodeProblem:
    largest, k = rng.choice([True, False]), rng.randint(1, 3)
    ordinal, which = ["", "second ", "third "][k - 1], "largest" if largest else "smallest"
    reverse = ", reverse=True" if largest else ""

    def solve(text: str) -> str:
        numbers = [int(x) for x in text.split("\n")[1].split()]
        return f"{sorted(numbers, reverse=largest)[k - 1]}\n"

    def case() -> str:
        line = _numbers_line(rng, count=(3, 9))
        return f"{len(line.split())}\n{line}"

    return CodeProblem(
        f"The first line holds an integer n >= 3, the second line n integers. Print the {ordinal}{which} of them "
        f"(equal values count separately).",
        f"input()\nnumbers = [int(x) for x in input().split()]\nprint(sorted(numbers{reverse})[{k - 1}])\n",
        solve, [case() for _ in range(4)])


def _factorial_mod(rng: random.Random) -> CodeProblem:
    m = rng.choice([7, 97, 1000, 1009, 10007, 65536])
    return CodeProblem(
        f"Read an integer n (0 <= n <= 50) and print n! modulo {m}.",
        f"n = int(input())\nresult = 1\nfor i in range(2, n + 1):\n    result = result * i % {m}\nprint(result)\n",
        lambda text: f"{math.factorial(int(text)) % m}\n",
        [f"{n}\n" for n in [0, rng.randint(1, 6), rng.randint(7, 20), rng.randint(21, 50)]])


def _prime(rng: random.Random) -> CodeProblem:
    yes, no = rng.choice([("YES", "NO"), ("prime", "composite"), ("True", "False"), ("P", "N"), ("1", "0")])
    program = (f"n = int(input())\nprime = all(n % d for d in range(2, int(n ** 0.5) + 1))\n"
               f"print({yes!r} if prime else {no!r})\n")

    def solve(text: str) -> str:
        n = int(text)
        return (yes if all(n % d for d in range(2, n)) else no) + "\n"

    return CodeProblem(f"Read an integer n >= 2 and print {yes} if n is prime, otherwise {no}.", program, solve,
                       [f"{n}\n" for n in [2, rng.choice([9, 15, 21, 25, 49]), rng.randint(50, 500), 97]])


def _word_lengths(rng: random.Random) -> CodeProblem:
    k, (phrase, operator) = rng.randint(3, 6), rng.choice([("at least", ">="), ("at most", "<="), ("exactly", "==")])
    compare = {">=": int.__ge__, "<=": int.__le__, "==": int.__eq__}[operator]
    return CodeProblem(
        f"Read one line of words separated by spaces and print how many of the words have {phrase} {k} letters.",
        f"print(sum(len(word) {operator} {k} for word in input().split()))\n",
        lambda text: f"{sum(compare(len(word), k) for word in text.split())}\n",
        [_sentence(rng) for _ in range(4)])


def _fibonacci(rng: random.Random) -> CodeProblem:
    f0, f1 = rng.randint(0, 3), rng.randint(1, 5)
    program = f"n = int(input())\na, b = {f0}, {f1}\nfor _ in range(n):\n    a, b = b, a + b\nprint(a)\n"

    def solve(text: str) -> str:
        values = [f0, f1]
        while len(values) <= int(text):
            values.append(values[-1] + values[-2])
        return f"{values[int(text)]}\n"

    return CodeProblem(
        f"A sequence starts with F(0) = {f0} and F(1) = {f1}; every later term is the sum of the two before it. "
        f"Read n (0 <= n <= 60) and print F(n).",
        program, solve, [f"{n}\n" for n in [0, 1, rng.randint(2, 10), rng.randint(11, 60)]])


def _sort_numbers(rng: random.Random) -> CodeProblem:
    descending = rng.choice([False, True])
    separator, described = rng.choice([(" ", "single spaces"), (",", "commas"), ("\n", "new lines")])
    reverse = ", reverse=True" if descending else ""
    return CodeProblem(
        f"Read one line of space-separated integers and print them in {'de' if descending else 'a'}scending order, "
        f"separated by {described}.",
        f"numbers = sorted((int(x) for x in input().split()){reverse})\nprint({separator!r}.join(map(str, numbers)))\n",
        lambda text: separator.join(map(str, sorted(map(int, text.split()), reverse=descending))) + "\n",
        [_numbers_line(rng) for _ in range(4)])


def _gcd_lcm(rng: random.Random) -> CodeProblem:
    lcm, count = rng.choice([False, True]), rng.randint(2, 4)
    name, function = ("least common multiple", "math.lcm") if lcm else ("greatest common divisor", "math.gcd")

    def solve(text: str) -> str:
        numbers = [int(x) for x in text.split()]
        if lcm:
            return f"{reduce(lambda x, y: x * y // math.gcd(x, y), numbers)}\n"
        return f"{reduce(math.gcd, numbers)}\n"

    def case() -> str:
        base = rng.randint(1, 12)
        return " ".join(str(base * rng.randint(1, 15)) for _ in range(count)) + "\n"

    return CodeProblem(
        f"Read {count} positive integers on one line and print their {name}.",
        f"import math\nnumbers = [int(x) for x in input().split()]\nprint({function}(*numbers))\n",
        solve, [case() for _ in range(4)])


def _count_lines(rng: random.Random) -> CodeProblem:
    word = rng.choice([w for w in WORDS if w.islower()])

    def case() -> str:
        lines = [_sentence(rng) for _ in range(rng.randint(1, 5))]
        return "".join(lines)

    return CodeProblem(
        f"Read lines until the end of the input and print how many of them contain {word!r} "
        f"(as a substring, case-sensitive).",
        f"import sys\nprint(sum({word!r} in line for line in sys.stdin))\n",
        lambda text: f"{sum(word in line for line in text.splitlines())}\n",
        [case() for _ in range(4)])


STDIO_PROBLEMS = (_sum_multiples, _reverse, _count_letters, _fizzbuzz, _kth_extreme, _factorial_mod, _prime,
                  _word_lengths, _fibonacci, _sort_numbers, _gcd_lcm, _count_lines)


def _power_sum(rng: random.Random) -> tuple[str, str, list[str]]:
    p = rng.randint(1, 5)
    tests = [f"assert f({n}) == {sum(i**p for i in range(1, n + 1))}" for n in [0, 1, rng.randint(2, 9), 20]]
    return (f"Define a Python function f(n) that returns 1**{p} + 2**{p} + ... + n**{p} (0 when n is 0).",
            f"def f(n):\n    return sum(i ** {p} for i in range(1, n + 1))\n", tests)


def _remove_letter(rng: random.Random) -> tuple[str, str, list[str]]:
    letter = rng.choice("aeinort")
    samples = rng.sample([w for w in WORDS if letter in w], 2) + [rng.choice([w for w in WORDS if letter not in w]), ""]
    tests = [f"assert f({s!r}) == {s.replace(letter, '')!r}" for s in samples]
    return (f"Define a Python function f(s) that returns the string s with every lower-case {letter!r} removed.",
            f"def f(s):\n    return s.replace({letter!r}, '')\n", tests)


FUNCTION_PROBLEMS = (_power_sum, _remove_letter)


def code_rows() -> tuple[list[dict], list[dict]]:
    """Per stdin/stdout template 4 train rows and 1 val row, per function template 3 and 1: train 54, val 14."""
    rng = random.Random("examples-code")
    train, val = [], []
    for template in STDIO_PROBLEMS:
        rows = _distinct(rng, 5, lambda template=template: _stdio_row(template(rng)))
        val.append(rows[0])
        train.extend(rows[1:])
    for template in FUNCTION_PROBLEMS:
        rows = _distinct(rng, 4, lambda template=template: _function_row(*template(rng)))
        val.append(rows[0])
        train.extend(rows[1:])
    rng.shuffle(train)
    rng.shuffle(val)
    return train, val


def _stdio_row(problem: CodeProblem) -> dict:
    tests = [{"input": text, "output": problem.solve(text)} for text in problem.inputs]
    return {"prompt": f"{problem.statement}\n\n{STDIO_INSTRUCTIONS}", "answer": problem.program,
            "reference": problem.program, "tests": tests}


def _function_row(statement: str, program: str, tests: list[str]) -> dict:
    return {"prompt": f"{statement}\n\n{FUNCTION_INSTRUCTIONS}", "answer": program, "reference": program,
            "tests": tests}


def _distinct(rng: random.Random, count: int, make: Callable[[], dict]) -> list[dict]:
    """`count` rows with distinct prompts (a template's parameters can repeat)."""
    rows: dict[str, dict] = {}
    for _ in range(100 * count):
        row = make()
        rows.setdefault(row["prompt"], row)
        if len(rows) == count:
            return list(rows.values())
    raise RuntimeError(f"template gave fewer than {count} distinct prompts")


# ---- sql --------------------------------------------------------------------------------------------------------

SCHEMA = """CREATE TABLE customers (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  city TEXT NOT NULL
);
CREATE TABLE products (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  category TEXT NOT NULL,
  price INTEGER NOT NULL  -- whole dollars
);
CREATE TABLE orders (
  id INTEGER PRIMARY KEY,
  customer_id INTEGER NOT NULL REFERENCES customers(id),
  product_id INTEGER NOT NULL REFERENCES products(id),
  quantity INTEGER NOT NULL,
  order_date TEXT NOT NULL  -- YYYY-MM-DD
);"""
CITIES = ["Berlin", "Lyon", "Porto", "Oslo"]
PRODUCTS = [("Atlas of Rivers", "Books"), ("Night Novel", "Books"), ("Cookbook", "Books"), ("Chess Set", "Games"),
            ("Puzzle Box", "Games"), ("Card Deck", "Games"), ("Rake", "Garden"), ("Seed Pack", "Garden"),
            ("Teapot", "Kitchen"), ("Knife Set", "Kitchen"), ("Mixing Bowl", "Kitchen")]
MONTHS = ["January", "February", "March", "April", "May", "June"]
SQL_INSTRUCTIONS = "Write one SQLite query that answers the question. Answer with the query in a ```sql code block."


@dataclass(frozen=True)
class Shop:
    customers: list[tuple[int, str, str]]
    products: list[tuple[int, str, str, int]]
    orders: list[tuple[int, int, int, int, str]]

    def script(self) -> str:
        inserts = [f"INSERT INTO customers VALUES ({i}, '{name}', '{city}');" for i, name, city in self.customers]
        inserts += [f"INSERT INTO products VALUES ({i}, '{name}', '{category}', {price});"
                    for i, name, category, price in self.products]
        inserts += [f"INSERT INTO orders VALUES ({i}, {c}, {p}, {q}, '{date}');" for i, c, p, q, date in self.orders]
        header = "-- Example shop database for the sql verifier; generated by `python -m rlsd_lab.tasks.examples`."
        return "\n".join([header, SCHEMA, *inserts]) + "\n"


def make_shop(rng: random.Random) -> Shop:
    """10 customers (the last two never order), 11 products with distinct prices, 30 orders in 2024 H1."""
    customers = [(i, name, CITIES[(i - 1) % 4] if i <= 4 else rng.choice(CITIES))
                 for i, name in enumerate(NAMES[:10], 1)]
    prices = rng.sample(range(5, 121), len(PRODUCTS))
    products = [(i, name, category, price) for i, ((name, category), price) in enumerate(zip(PRODUCTS, prices), 1)]
    orders = [(i, rng.randint(1, 8), rng.randint(1, len(products)), rng.randint(1, 5),
               f"2024-{rng.randint(1, 6):02d}-{rng.randint(1, 28):02d}") for i in range(1, 31)]
    return Shop(customers, products, orders)


def _sql_questions(shop: Shop, rng: random.Random) -> list[tuple[str, str]]:
    """(question, gold query) for every template and every parameter that gives a non-empty answer."""
    customer_names = {i: name for i, name, _ in shop.customers}
    product_names = {i: name for i, name, _, _ in shop.products}
    ordered_products = sorted({product_names[p] for _, _, p, _, _ in shop.orders})
    buyers = sorted({customer_names[c] for _, c, _, _, _ in shop.orders})
    categories = sorted({category for _, _, category, _ in shop.products})
    join = "FROM orders JOIN customers ON customers.id = orders.customer_id"
    revenue = "FROM orders JOIN products ON products.id = orders.product_id"
    questions = [
        ("For each city, how many customers live there? Return the city and the count, ordered by city.",
         "SELECT city, COUNT(*) FROM customers GROUP BY city ORDER BY city;"),
        ("List the names of the customers who have never placed an order, in alphabetical order.",
         "SELECT name FROM customers WHERE id NOT IN (SELECT customer_id FROM orders) ORDER BY name;"),
    ]
    questions += [(f"List the names of the customers who live in {city}, in alphabetical order.",
                   f"SELECT name FROM customers WHERE city = '{city}' ORDER BY name;") for city in CITIES]
    questions += [(f"How many orders has {name} placed?",
                   f"SELECT COUNT(*) {join} WHERE customers.name = '{name}';") for _, name, _ in shop.customers]
    questions += [(f"What is the total quantity of {product} ordered over all orders?",
                   f"SELECT SUM(quantity) {revenue} WHERE products.name = '{product}';")
                  for product in ordered_products]
    questions += [((f"List the names of the customers who ordered {product}, in alphabetical order and "
                    f"without duplicates."),
                   (f"SELECT DISTINCT customers.name {join} JOIN products ON products.id = orders.product_id "
                    f"WHERE products.name = '{product}' ORDER BY customers.name;")) for product in ordered_products]
    questions += [(f"How much has {name} spent in total (price times quantity, over all of their orders)?",
                   (f"SELECT SUM(products.price * orders.quantity) {join} JOIN products ON products.id = "
                    f"orders.product_id WHERE customers.name = '{name}';")) for name in buyers]
    questions += [(f"How many orders were placed in {month} 2024?",
                   f"SELECT COUNT(*) FROM orders WHERE order_date LIKE '2024-{number:02d}-%';")
                  for number, month in enumerate(MONTHS, 1)]
    for category in categories:
        prices = sorted(price for _, _, c, price in shop.products if c == category)
        questions += [(f"What is the average price of the products in the {category} category?",
                       f"SELECT AVG(price) FROM products WHERE category = '{category}';"),
                      (f"What is the name of the cheapest product in the {category} category?",
                       f"SELECT name FROM products WHERE category = '{category}' ORDER BY price, name LIMIT 1;")]
        threshold = rng.randint(prices[0] - 5, prices[-1] - 1)
        questions.append(((f"List the name and price of the products in the {category} category that cost "
                           f"more than {threshold} dollars, most expensive first."),
                          (f"SELECT name, price FROM products WHERE category = '{category}' AND price > {threshold} "
                           f"ORDER BY price DESC, name;")))
    questions += [((f"Which {k} products bring in the most revenue (price times quantity, summed over all "
                    f"orders)? Return the product name and its revenue, highest revenue first."),
                   (f"SELECT products.name, SUM(products.price * orders.quantity) AS revenue {revenue} "
                    f"GROUP BY products.id ORDER BY revenue DESC, products.name LIMIT {k};")) for k in (2, 3, 4, 5)]
    questions += [((f"Which customers placed at least {k} orders? Return the name and the number of orders, "
                    f"most orders first and ties by name."),
                   (f"SELECT customers.name, COUNT(*) AS n {join} GROUP BY customers.id HAVING COUNT(*) >= {k} "
                    f"ORDER BY n DESC, customers.name;")) for k in (2, 3, 4)]
    return questions


def sql_rows() -> tuple[str, list[dict], list[dict]]:
    """The shop database script and its questions: val 15 rows, train the rest."""
    rng = random.Random("examples-sql")
    shop = make_shop(rng)
    questions = _sql_questions(shop, rng)
    rng.shuffle(questions)
    rows = [{"prompt": f"Database schema (SQLite):\n{SCHEMA}\n\nQuestion: {question}\n\n{SQL_INSTRUCTIONS}",
             "answer": query, "reference": query, "db": "shop.sql"} for question, query in questions]
    return shop.script(), rows[15:], rows[:15]


# ---- json -------------------------------------------------------------------------------------------------------

JSON_INSTRUCTIONS = "Reply with the JSON object only."


def _object_schema(properties: dict, **more) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False,
            **more}


def _person(rng: random.Random) -> tuple[str, dict, dict]:
    name, age = rng.choice(NAMES), rng.randint(18, 90)
    tags = sorted(rng.sample(["admin", "author", "editor", "guest", "reviewer", "tester"], rng.randint(1, 3)))
    task = (f"Return a JSON object for the person named {name}, age {age}, with the tags {', '.join(tags)}. "
            f"Fields: name (string), age (integer), tags (array of strings, in the order given).")
    schema = _object_schema({"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
                             "tags": {"type": "array", "items": {"type": "string"}}})
    return task, schema, {"name": name, "age": age, "tags": tags}


def _book(rng: random.Random) -> tuple[str, dict, dict]:
    title = f"The {rng.choice(['Silent', 'Last', 'Golden', 'Hidden'])} {rng.choice(['River', 'Garden', 'Orbit'])}"
    author = f"{rng.choice(NAMES)} {rng.choice(['Lovelace', 'Hopper', 'Turing', 'Noether'])}"
    year, available = rng.randint(1850, 2024), rng.choice([True, False])
    task = (f"Return a JSON object describing the book \"{title}\" by {author}, published in {year}, which is "
            f"{'' if available else 'not '}available. Fields: title (string), author (string), year (integer), "
            f"available (boolean).")
    schema = _object_schema({"title": {"type": "string"}, "author": {"type": "string"},
                             "year": {"type": "integer"}, "available": {"type": "boolean"}})
    return task, schema, {"title": title, "author": author, "year": year, "available": available}


def _product(rng: random.Random) -> tuple[str, dict, dict]:
    sku = f"{rng.choice(['KT', 'GM', 'BK'])}-{rng.randint(100, 999)}"
    price, in_stock = rng.randint(199, 9999) / 100, rng.choice([True, False])
    width, height = rng.randint(5, 80), rng.randint(5, 80)
    task = (f"Return a JSON object for the product {sku}: price {price} dollars, {'in' if in_stock else 'out of'} "
            f"stock, {width} cm wide and {height} cm high. Fields: sku (string), price (number), in_stock (boolean), "
            f"dimensions (object with integer fields width and height).")
    size = _object_schema({"width": {"type": "integer"}, "height": {"type": "integer"}})
    schema = _object_schema({"sku": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
                             "price": {"type": "number", "minimum": 0}, "in_stock": {"type": "boolean"},
                             "dimensions": size})
    return task, schema, {"sku": sku, "price": price, "in_stock": in_stock,
                          "dimensions": {"width": width, "height": height}}


def _event(rng: random.Random) -> tuple[str, dict, dict]:
    name = f"{rng.choice(['Spring', 'Summer', 'Autumn', 'Winter'])} {rng.choice(['Meetup', 'Workshop', 'Fair'])}"
    date = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    attendees = rng.sample(NAMES, rng.randint(1, 4))
    task = (f"Return a JSON object for the event \"{name}\" on {date} (YYYY-MM-DD) with the attendees "
            f"{', '.join(attendees)}. Fields: name (string), date (string), attendees (non-empty array of strings, "
            f"in the order given).")
    schema = _object_schema({"name": {"type": "string"},
                             "date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
                             "attendees": {"type": "array", "items": {"type": "string"}, "minItems": 1}})
    return task, schema, {"name": name, "date": date, "attendees": attendees}


def _city(rng: random.Random) -> tuple[str, dict, dict]:
    name = rng.choice(["Northport", "Lakeside", "Redhill", "Eastwood", "Sunvale", "Highgate"])
    country, population = rng.choice(["Norway", "Portugal", "Chile", "Kenya", "Japan"]), rng.randint(2, 900) * 1000
    lat, lon = round(rng.uniform(-60, 70), 2), round(rng.uniform(-170, 170), 2)
    task = (f"Return a JSON object for the city {name} in {country}, population {population}, at latitude {lat} "
            f"and longitude {lon}. Fields: name (string), country (string), population (integer), coordinates "
            f"(object with number fields lat and lon).")
    coordinates = _object_schema({"lat": {"type": "number", "minimum": -90, "maximum": 90},
                                  "lon": {"type": "number", "minimum": -180, "maximum": 180}})
    schema = _object_schema({"name": {"type": "string"}, "country": {"type": "string"},
                             "population": {"type": "integer", "minimum": 0}, "coordinates": coordinates})
    return task, schema, {"name": name, "country": country, "population": population,
                          "coordinates": {"lat": lat, "lon": lon}}


def _account(rng: random.Random) -> tuple[str, dict, dict]:
    username = rng.choice(NAMES).lower() + str(rng.randint(1, 99))
    status, logins = rng.choice(["active", "suspended", "closed"]), rng.randint(0, 500)
    roles = sorted(rng.sample(["read", "write", "admin"], rng.randint(1, 3)))
    task = (f"Return a JSON object for the account {username}: status {status}, roles {', '.join(roles)}, "
            f"{logins} logins. Fields: username (string), status (one of active, suspended, closed), roles (array "
            f"of distinct roles from read, write, admin, in the order given), login_count (integer).")
    schema = _object_schema({"username": {"type": "string"},
                             "status": {"enum": ["active", "suspended", "closed"]},
                             "roles": {"type": "array", "items": {"enum": ["read", "write", "admin"]},
                                       "uniqueItems": True},
                             "login_count": {"type": "integer", "minimum": 0}})
    return task, schema, {"username": username, "status": status, "roles": roles, "login_count": logins}


JSON_OBJECTS = (_person, _book, _product, _event, _city, _account)


def json_rows() -> tuple[list[dict], list[dict]]:
    """75 distinct objects over six templates: val 15 rows, train 60."""
    rng = random.Random("examples-json")

    def row() -> dict:
        task, schema, value = rng.choice(JSON_OBJECTS)(rng)
        text = json.dumps(value)
        return {"prompt": f"{task} {JSON_INSTRUCTIONS}", "answer": text, "reference": text, "schema": schema}

    rows = _distinct(rng, 75, row)
    return rows[15:], rows[:15]


# ---- veRL layout and writing --------------------------------------------------------------------------------------

def verl_rows(math_train: list[dict], count: int = 40) -> list[dict]:
    """The first `count` math train rows in veRL's parquet layout."""
    return [{"data_source": "rlsd_lab/math_example", "prompt": [{"role": "user", "content": row["prompt"]}],
             "ability": "math", "reward_model": {"style": "rule", "ground_truth": row["answer"]},
             "extra_info": {"index": index, "reference": row["reference"]}}
            for index, row in enumerate(math_train[:count])]


def _split(rng: random.Random, first: list[dict], second: list[dict], val_share: int) -> tuple[list, list]:
    """`val_share` rows of each kind to val, the rest to train; each split shuffled so the kinds mix."""
    val = first[:val_share] + second[:val_share]
    train = first[val_share:] + second[val_share:]
    rng.shuffle(train)
    rng.shuffle(val)
    return train, val


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


def write_examples(out: Path = EXAMPLES_DIR) -> list[Path]:
    """Writes every example dataset under `out`; returns the files written."""
    import pandas as pd  # only for the veRL parquet file

    shop_script, sql_train, sql_val = sql_rows()
    math_train, math_val = math_rows()
    files = {"math/train.jsonl": _jsonl(math_train), "math/val.jsonl": _jsonl(math_val),
             "sql/shop.sql": shop_script.encode(), "sql/train.jsonl": _jsonl(sql_train),
             "sql/val.jsonl": _jsonl(sql_val)}
    for name, (train, val) in {"code": code_rows(), "json": json_rows()}.items():
        files.update({f"{name}/train.jsonl": _jsonl(train), f"{name}/val.jsonl": _jsonl(val)})
    written = []
    for relative, content in sorted(files.items()):
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        written.append(path)
    parquet = out / "verl_math" / "train.parquet"
    parquet.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(verl_rows(math_train)).to_parquet(parquet, index=False)
    return written + [parquet]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=EXAMPLES_DIR, help="output folder (default: %(default)s)")
    for path in write_examples(parser.parse_args(argv).out):
        print(path)


if __name__ == "__main__":
    main()
